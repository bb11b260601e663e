// transformers.js consumer: node run_transformersjs.mjs IN.json OUT.json (run from its node_modules folder).
// Jobs: "classify", "embed" (a pipeline on texts) and "generate" (an encoder-decoder on token ids, greedy).
// Loads each folder as a new user would: local files only, the pipeline's defaults, dtype picks the ONNX file.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AutoModelForSeq2SeqLM, env, pipeline, Tensor } from "@huggingface/transformers";

env.allowRemoteModels = false;
const [input, output] = process.argv.slice(2);
const { jobs } = JSON.parse(readFileSync(input, "utf8"));
const results = {};
const DTYPE = { fp32: "fp32", int8: "q8" }; // q8 -> onnx/model_quantized.onnx
for (const job of jobs) {
  try {
    env.localModelPath = path.dirname(job.folder) + "/";
    const id = path.basename(job.folder);
    if (job.kind === "generate") {
      // an encoder-decoder folder, greedy from the given token ids: the tokens, the decoder start included
      const model = await AutoModelForSeq2SeqLM.from_pretrained(id, { dtype: DTYPE[job.precision] });
      const shape = [1, job.ids.length];
      const input_ids = new Tensor("int64", BigInt64Array.from(job.ids.map(BigInt)), shape);
      const attention_mask = new Tensor("int64", BigInt64Array.from(job.ids.map(() => 1n)), shape);
      const opts = { max_new_tokens: job.max_new_tokens, do_sample: false, num_beams: 1 };
      const out = await model.generate({ input_ids, attention_mask, ...opts });
      results[job.id] = { tokens: Array.from(out.tolist()[0], Number) };
    } else if (job.kind === "classify") {
      const pipe = await pipeline("text-classification", id, { dtype: DTYPE[job.precision] });
      const out = [];
      for (let i = 0; i < job.texts.length; i += job.batch_size) {
        out.push(...(await pipe(job.texts.slice(i, i + job.batch_size), { top_k: null })));
      }
      results[job.id] = { scores: out.map((labels) => Object.fromEntries(labels.map((l) => [l.label, l.score]))) };
    } else {
      const pipe = await pipeline("feature-extraction", id, { dtype: DTYPE[job.precision] });
      const rows = [];
      for (let i = 0; i < job.texts.length; i += job.batch_size) {
        const out = await pipe(job.texts.slice(i, i + job.batch_size), { pooling: "mean", normalize: true });
        rows.push(...out.tolist());
      }
      results[job.id] = { embeddings: rows };
    }
  } catch (e) {
    results[job.id] = { error: String(e && e.stack ? e.stack : e).slice(0, 2000) };
  }
}
writeFileSync(output, JSON.stringify({ results }));
