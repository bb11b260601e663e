"""The Hugging Face course walkthrough, with `onnxpipe` where the course says `transformers`.

Run it in a runtime-only environment (make demo does): it needs onnxruntime, tokenizers and numpy, and
fails loudly if torch or transformers got imported along the way.

    python bench/walkthrough.py [--embeddings models/all-minilm-l6-v2]
"""

import argparse
import sys

import numpy as np

from onnxpipe import AutoModel, AutoTokenizer, pipeline

parser = argparse.ArgumentParser()
parser.add_argument("--embeddings", metavar="DIR", help="also run sentence embeddings from this model folder")
args = parser.parse_args()

raw_inputs = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"]

classifier = pipeline("sentiment-analysis")
print(
    f"pipeline('sentiment-analysis') -> {classifier.model.manifest.folder} "
    f"({classifier.precision}, {classifier.device})"
)
print(classifier(raw_inputs))

tokenizer = AutoTokenizer.from_pretrained("minilm-sst2")
inputs = tokenizer(raw_inputs, padding=True, truncation=True, return_tensors="np")
print("input_ids:", inputs["input_ids"].tolist())
print("attention_mask:", inputs["attention_mask"].tolist())

model = AutoModel.from_pretrained("minilm-sst2")
outputs = model(**inputs)
print("last_hidden_state.shape:", outputs.last_hidden_state.shape)

if args.embeddings:
    embed = pipeline("sentence-embeddings", model=args.embeddings)
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    vectors = embed(sentences)
    print(
        f"sentence-embeddings ({embed.precision}): shape {vectors.shape}, "
        f"norms {np.linalg.norm(vectors, axis=1).round(4).tolist()}"
    )
    sims = vectors @ vectors.T
    print(f"cosine('{sentences[0]}', '{sentences[1]}') = {sims[0, 1]:.3f}; with '{sentences[2]}' = {sims[0, 2]:.3f}")

leaked = sorted(m for m in ("torch", "transformers", "optimum", "onnx") if m in sys.modules)
if leaked:
    sys.exit(f"the runtime imported {leaked}: it must not")
print("imported neither torch, transformers, optimum nor onnx")
