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

import pytest

import onnxpipe

ROOT = Path(__file__).resolve().parents[1]
# starlette, uvicorn, httptools, uvloop: only the serve extra (onnxpipe._serve) may import them.
FORBIDDEN = [
    "torch",
    "transformers",
    "optimum",
    "onnx",
    "onnxpipe_export",
    "tensorflow",
    "jax",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
]

EXPECTED_ALL = [
    "pipeline",
    "AutoTokenizer",
    "AutoModel",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering",
    "AutoModelForMaskedLM",
    "BatchEncoding",
    "ModelOutput",
    "Pipeline",
    "SessionOptions",
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


def _child(code: str, blocked: list[str], *args: str):
    """Run ``code`` in a fresh interpreter (``sys.argv[1]``: ``blocked`` as JSON; then ``args``); return the
    JSON its last stdout line holds. A failing child fails the test with its stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(blocked), *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_works_with_the_export_stack_unimportable():
    out = _child(_CHILD, FORBIDDEN)
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


HEAVY_OPTIONAL = ["ray", "pyarrow", "pandas"]


def test_import_and_cli_parser_load_no_batch_engine():
    """`import onnxpipe` and the CLI's parser (the batch subcommand included) import neither ray nor pyarrow:
    they load only when `onnxpipe batch` runs."""
    code = (
        "import json, sys, onnxpipe, onnxpipe._cli; onnxpipe._cli.build_parser(); "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in json.loads(sys.argv[1]))))"
    )
    assert _child(code, HEAVY_OPTIONAL) == []


_BATCH_CHILD = _CHILD.split("import onnxpipe\n")[0] + textwrap.dedent(
    """
    import pathlib, tempfile
    import pyarrow as pa, pyarrow.parquet as pq
    from onnxpipe._batch_job import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        pq.write_table(pa.table({"text": ["I love it", "I hate it"]}), folder / "in.parquet")
        run_batch("minilm-sst2", folder / "in.parquet", folder / "out.parquet")
        labels = pq.read_table(folder / "out.parquet").column("label").to_pylist()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps({"labels": labels, "loaded": loaded}))
    """
)


def test_local_batch_engine_works_with_the_export_stack_unimportable():
    pytest.importorskip("pyarrow")
    assert _child(_BATCH_CHILD, FORBIDDEN) == {"labels": ["POSITIVE", "NEGATIVE"], "loaded": []}


_GENERATE_CHILD = _CHILD.split("import onnxpipe\n")[0] + textwrap.dedent(
    """
    from onnxpipe import pipeline

    generator = pipeline("text-generation", model=sys.argv[2])
    full = generator("Hello there", max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    streamed = "".join(generator.stream("Hello there", max_new_tokens=12, do_sample=False))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps({"full": full, "streamed": streamed, "loaded": loaded, "attempts": attempts}))
    """
)


@pytest.mark.torch  # the folder is exported in this session; the child process runs without the export stack
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_text_generation_streams_with_the_export_stack_unimportable(arch, tiny_export):
    """Both decoder graphs (optimum's for GPT-2, the fused one for Llama) generate and stream with only the
    runtime importable."""
    folder = tiny_export(arch, "text-generation", precisions="fp32,int4")
    out = _child(_GENERATE_CHILD, FORBIDDEN, str(folder))
    assert out["full"] and out["streamed"] == out["full"] and out["loaded"] == []


# -- chat templates: jinja2 is the chat extra, not a runtime dependency -------------------------------------------
CHAT = [{"role": "user", "content": "What time does the train leave?"}]

_CHAT_CHILD = _CHILD.split("import onnxpipe\n")[0] + textwrap.dedent(
    """
    from onnxpipe import errors, pipeline

    chat = json.loads(sys.argv[3])
    generator = pipeline("text-generation", model=sys.argv[2])
    try:
        out = {"generated": generator(chat, max_new_tokens=8, do_sample=False)}
    except errors.ChatTemplateError as e:
        out = {"error": type(e).__name__, "message": str(e), "import_error": isinstance(e, ImportError)}
    out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(json.dumps(out))
    """
)


@pytest.mark.torch  # the folder is exported in this session; the child process runs without the export stack
def test_chat_template_renders_with_only_the_runtime_and_the_chat_extra(tiny_export):
    """Chat input to a folder with a chat template: with the runtime and jinja2 (the chat extra) the child
    generates what this process does; without jinja2 it gets ChatExtraMissingError naming the pip line."""
    folder = tiny_export("llama", "text-generation", precisions="fp32,int4")  # the streaming test's folder
    expected = onnxpipe.pipeline("text-generation", model=folder)(CHAT, max_new_tokens=8, do_sample=False)
    assert expected[0]["generated_text"][-1]["role"] == "assistant"

    out = _child(_CHAT_CHILD, FORBIDDEN, str(folder), json.dumps(CHAT))
    assert out == {"generated": expected, "loaded": []}

    out = _child(_CHAT_CHILD, [*FORBIDDEN, "jinja2"], str(folder), json.dumps(CHAT))
    assert out["error"] == "ChatExtraMissingError" and out["import_error"], out
    assert "pip install 'onnxpipe[chat]'" in out["message"]


def test_chat_without_jinja2_names_the_chat_extra(monkeypatch):
    from onnxpipe import errors
    from onnxpipe._chat import render

    for name in ("jinja2", "jinja2.ext", "jinja2.sandbox"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import jinja2...` raise ImportError
    with pytest.raises(errors.ChatExtraMissingError, match=r"pip install 'onnxpipe\[chat\]'") as caught:
        render("{{ messages[0]['content'] }}", CHAT, {})
    # One except clause catches it however the caller thinks of it: a chat problem, or a missing package.
    assert isinstance(caught.value, errors.ChatTemplateError) and isinstance(caught.value, ImportError)
