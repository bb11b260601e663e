// An onnxpipe model folder in the browser: transformers.js (WASM backend) reads models/<name>/ from this origin
// only (remote models off, the .wasm files from the local copy of the npm package), and times what it does.
// Query parameters: model (default minilm-sst2), dtype (q8 = onnx/model_quantized.onnx, fp32 = onnx/model.onnx),
// threads (WASM threads, default 1: more need a cross-origin-isolated page, which a plain static server is not),
// build (plain or asyncify: which onnxruntime-web WASM binary).
const params = new URLSearchParams(location.search);
const MODEL = params.get("model") ?? "minilm-sst2";
const DTYPE = params.get("dtype") ?? "q8";
const THREADS = Number(params.get("threads") ?? 1);
const BUILD = params.get("build") ?? "plain"; // onnxruntime-web WASM build: plain or asyncify
// The seed sentences of bench/walkthrough.py; the latency button times each one at a time.
const SEEDS = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"];
const WARMUP = 3;
const ROUNDS = 25;

const $ = (id) => document.getElementById(id);
const ms = (t) => t.toFixed(1);

function show(status, isError = false) {
  $("status").textContent = status;
  $("status").className = isError ? "error" : "";
}

function render(text, predictions) {
  const box = $("predictions");
  box.replaceChildren(
    ...predictions.map(({ label, score }) => {
      const row = document.createElement("div");
      row.className = "prediction";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${(100 * score).toFixed(1)}%`;
      row.append(
        Object.assign(document.createElement("span"), { className: "label", textContent: label }),
        Object.assign(document.createElement("span"), { className: "score", textContent: score.toFixed(6) }),
        bar,
      );
      return row;
    }),
  );
  box.dataset.text = text; // which input these predictions are for
}

async function main() {
  const { env, pipeline } = await import("/vendor/transformers/transformers.min.js");
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = "/models/";
  env.useBrowserCache = false; // every load reads the files, so the load time is a real one
  env.useWasmCache = false;
  const wasm = env.backends.onnx.wasm;
  // onnxruntime-web's plain WASM build (14 MB): transformers.js defaults to the asyncify one (27 MB, needed for
  // WebGPU), which here took 2.2x as long to load and ran batch-1 ~2x slower (README, "In the browser")
  const suffix = BUILD === "plain" ? "" : `.${BUILD}`;
  wasm.wasmPaths = {
    mjs: `/vendor/ort/ort-wasm-simd-threaded${suffix}.mjs`,
    wasm: `/vendor/ort/ort-wasm-simd-threaded${suffix}.wasm`,
  };
  wasm.numThreads = THREADS;
  $("model").textContent = `models/${MODEL} (dtype ${DTYPE})`;
  $("runtime").textContent =
    `transformers.js ${env.version}, onnxruntime-web ${env.backends.onnx.versions?.web ?? "?"}, ` +
    `WASM (${BUILD} build), ${THREADS} thread(s), ${navigator.hardwareConcurrency} logical CPUs`;

  const t0 = performance.now();
  const classify = await pipeline("text-classification", MODEL, { dtype: DTYPE, device: "wasm" });
  $("load-ms").textContent = ms(performance.now() - t0);

  const predict = async (text) => {
    const t = performance.now();
    const out = await classify(text, { top_k: null });
    return [out, performance.now() - t];
  };
  const [, first] = await predict(SEEDS[0]);
  $("first-ms").textContent = ms(first);

  $("run").onclick = async () => {
    const text = $("text").value;
    const [out, took] = await predict(text);
    $("last-ms").textContent = ms(took);
    render(text, out);
  };
  $("bench").onclick = async () => {
    $("bench").disabled = true;
    show("Measuring…");
    for (const s of SEEDS) for (let i = 0; i < WARMUP; i++) await predict(s);
    const times = [];
    for (let r = 0; r < ROUNDS; r++) for (const s of SEEDS) times.push((await predict(s))[1]);
    times.sort((a, b) => a - b);
    $("bench-ms").textContent = ms(times[Math.floor(times.length / 2)]);
    $("bench-detail").textContent = `(${times.length} calls over the ${SEEDS.length} seed sentences, after ${WARMUP} warm-up each)`;
    $("bench").disabled = false;
    show("Ready.");
  };
  // for scripts (the browser test compares many sentences without typing each): scores as the page shows them
  window.onnxpipeDemo = { predict: async (text) => (await predict(text))[0] };
  $("run").disabled = $("bench").disabled = false;
  show("Ready.");
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  show(`Could not load the model: ${e}`, true);
  console.error(e);
});
