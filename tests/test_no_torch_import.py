"""The runtime never imports the export stack: proved in a subprocess where those imports fail.

Merely checking ``sys.modules`` after ``import onnxpipe`` would miss a lazy import inside a call, and would
pass by accident in an environment without torch; making the imports raise catches both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import onnxpipe

ROOT = Path(__file__).resolve().parents[1]
# starlette and uvicorn: only the serve extra (onnxpipe._serve) may import them.
FORBIDDEN = ["torch", "transformers", "optimum", "onnx", "onnxpipe_export", "tensorflow", "jax", "starlette", "uvicorn"]

EXPECTED_ALL = [
    "pipeline",
    "AutoTokenizer",
    "AutoModel",
    "AutoModelForSequenceClassification",
    "BatchEncoding",
    "ModelOutput",
    "Pipeline",
    "TASKS",
    "FORMAT_VERSION",
    "errors",
    "__version__",
]

_CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys

    FORBIDDEN = set(json.loads(sys.argv[1]))
    attempts = []

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            # "onnx" and "onnx.*" are blocked; "onnxruntime" and "onnxpipe" are not.
            if name.split(".")[0] in FORBIDDEN:
                attempts.append(name)
                raise ImportError(f"blocked import of {name} (the runtime must not need it)")
            return None

    sys.meta_path.insert(0, Block())

    import onnxpipe
    from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    texts = ["I've been waiting for a HuggingFace course my whole life.", "I hate this so much!"]
    labels = [r["label"] for r in pipeline("sentiment-analysis")(texts)]
    tok = AutoTokenizer.from_pretrained("minilm-sst2")
    inputs = tok(texts, padding=True, truncation=True, return_tensors="np")
    shape = list(AutoModel.from_pretrained("minilm-sst2")(**inputs).last_hidden_state.shape)
    logits = AutoModelForSequenceClassification.from_pretrained("minilm-sst2")(**inputs).logits
    features = pipeline("feature-extraction", model="minilm-sst2")(texts[1])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps({"labels": labels, "shape": shape, "logits": list(logits.shape), "attempts": attempts,
                      "loaded": loaded, "features": [len(features), len(features[0])]}))
    """
)


def test_runtime_works_with_the_export_stack_unimportable():
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(FORBIDDEN)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["labels"] == ["POSITIVE", "NEGATIVE"]
    assert out["shape"] == [2, 16, 384]
    assert out["logits"] == [2, 2]
    assert out["features"] == [1, 8]
    assert out["loaded"] == []
    # numpy/onnxruntime may probe optional packages; whatever they tried was refused and they coped.
    assert not [a for a in out["attempts"] if a.split(".")[0] in ("transformers", "optimum", "onnxpipe_export")]


def test_public_surface():
    assert onnxpipe.__all__ == EXPECTED_ALL
    for name in EXPECTED_ALL:
        assert hasattr(onnxpipe, name), name
