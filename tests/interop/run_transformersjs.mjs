// transformers.js consumer: node run_transformersjs.mjs IN.json OUT.json (run from its node_modules folder).
// Loads each folder as a new user would: local files only, the pipeline's defaults, dtype picks the ONNX file.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { env, pipeline } from "@huggingface/transformers";

env.allowRemoteModels = false;
const [input, output] = process.argv.slice(2);
const { jobs } = JSON.parse(readFileSync(input, "utf8"));
const results = {};
const DTYPE = { fp32: "fp32", int8: "q8" }; // q8 -> onnx/model_quantized.onnx
for (const job of jobs) {
  try {
    env.localModelPath = path.dirname(job.folder) + "/";
    const id = path.basename(job.folder);
    if (job.kind === "classify") {
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
