"""Optimum consumer: python run_optimum.py IN.json OUT.json, in the optimum environment (envs.py).

ORTModel classes as Optimum's documentation loads an ONNX folder: subfolder="onnx", file_name=..., the
tokenizer from the folder with padding and truncation=True (no max_length: the folder must say it).
Sentence vectors are mean pooled and normalised by hand, as Optimum's documentation does it.
"""

import json
import sys
import traceback

import torch
from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification
from transformers import AutoTokenizer

FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}


def run(job):
    tok = AutoTokenizer.from_pretrained(job["folder"])
    cls = ORTModelForSequenceClassification if job["kind"] == "classify" else ORTModelForFeatureExtraction
    model = cls.from_pretrained(job["folder"], subfolder="onnx", file_name=FILES[job["precision"]])
    parts = [
        batch(model, tok, job, job["texts"][i : i + job["batch_size"]])
        for i in range(0, len(job["texts"]), job["batch_size"])
    ]
    return {key: [row for part in parts for row in part[key]] for key in parts[0]}


def batch(model, tok, job, texts):
    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc)
    if job["kind"] == "classify":
        probs = out.logits.softmax(-1)
        labels = [model.config.id2label[i] for i in range(probs.shape[1])]
        return {"scores": [dict(zip(labels, row)) for row in probs.tolist()]}
    mask = enc["attention_mask"][..., None].to(out.last_hidden_state.dtype)
    pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return {"embeddings": torch.nn.functional.normalize(pooled, dim=-1).tolist()}


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
