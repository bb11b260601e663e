"""fastembed consumer: python run_fastembed.py IN.json OUT.json, in the fastembed environment (envs.py).

A custom model from a local folder, as fastembed's documentation adds one: add_custom_model (mean pooling,
normalisation, the ONNX file, the output) and TextEmbedding(specific_model_path=folder). fastembed reads the
tokenizer files and config.json from the folder and truncates at tokenizer_config.json's model_max_length (or
its max_length, whichever is smaller). fastembed has no text-classification API: a classification folder is
read through the same custom-model API with output_name="logits" and no pooling, and softmax applied here.
"""

import json
import sys
import traceback

import numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx"}


def run(job):
    name = f"onnxpipe-interop/{job['id']}"  # fastembed's registry of custom models is global: one name per job
    classify = job["kind"] == "classify"
    TextEmbedding.add_custom_model(
        model=name,
        pooling=PoolingType.DISABLED if classify else PoolingType.MEAN,
        normalization=not classify,
        sources=ModelSource(hf=name),
        dim=job["dim"],
        model_file=FILES[job["precision"]],
        output_name="logits" if classify else "last_hidden_state",
    )
    model = TextEmbedding(model_name=name, specific_model_path=job["folder"])
    out = np.stack(list(model.embed(job["texts"], batch_size=job["batch_size"]))).astype(np.float64)
    if not classify:
        return {"embeddings": out.tolist()}
    config = json.load(open(f"{job['folder']}/config.json", encoding="utf-8"))
    probs = np.exp(out - out.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = [config["id2label"][str(i)] for i in range(out.shape[1])]
    return {"scores": [dict(zip(labels, row)) for row in probs.tolist()]}


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
