"""sentence-transformers consumer: python run_sentence_transformers.py IN.json OUT.json (envs.py environment).

SentenceTransformer(folder, backend="onnx") as its documentation loads an exported ONNX file; the modules
(Pooling, Normalize) and the truncation come from the folder alone. A classification folder has no
modules.json, so sentence-transformers builds Transformer + mean Pooling on its last_hidden_state output.
"""

import json
import sys
import traceback

from sentence_transformers import SentenceTransformer

FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx"}


def run(job):
    if job["kind"] == "st-pytorch":  # the reference: sentence-transformers' own PyTorch model on the checkpoint
        model = SentenceTransformer(job["folder"], device="cpu")
    else:
        model = SentenceTransformer(
            job["folder"], backend="onnx", device="cpu", model_kwargs={"file_name": FILES[job["precision"]]}
        )
    vectors = model.encode(job["texts"], batch_size=job["batch_size"], convert_to_numpy=True)
    return {
        "embeddings": vectors.tolist(),
        "modules": [type(m).__name__ for m in model],
        "max_seq_length": model.max_seq_length,
    }


def main(src, dst):
    results = {}
    for job in json.load(open(src, encoding="utf-8"))["jobs"]:
        try:
            results[job["id"]] = run(job)
        except Exception:
            results[job["id"]] = {"error": traceback.format_exc()[-2000:]}
    json.dump({"results": results}, open(dst, "w", encoding="utf-8"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
