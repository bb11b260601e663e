"""docs/serve.md's client examples run, unchanged but for the port, against real servers: the one-per-library
examples (huggingface_hub, openai, LangChain) against minilm-sst2 with an embedding model named ``emb``, and the
generation example (openai streaming a chat, huggingface_hub's text_generation) against a tiny Llama named
``smollm``. A block that raises fails its case; each block's printed output must not be empty."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'onnxpipe[serve]'")
pytest.importorskip("huggingface_hub", reason="needs the test extra")
pytest.importorskip("openai", reason="needs the test extra")
pytest.importorskip("langchain_openai", reason="needs the test extra")

from _serve_util import ROOT, Server  # noqa: E402

pytestmark = pytest.mark.torch  # the tiny embedding and generation folders are exported in the session

DOC = ROOT / "docs" / "serve.md"
URL = "http://127.0.0.1:8080"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
CLIENT_BLOCKS = [b for b in BLOCKS if URL in b]


def _generation(block: str) -> bool:
    return "chat.completions" in block or "text_generation" in block


@pytest.fixture(scope="module")
def servers(tiny_export):
    emb = tiny_export("bert", "feature-extraction")
    llama = tiny_export("llama", "text-generation", precisions="fp32")
    with Server(f"minilm-sst2={ROOT / 'models' / 'minilm-sst2'}", f"emb={emb}") as tasks:
        with Server(f"smollm={llama}") as generation:
            yield {"tasks": tasks, "generation": generation}


def test_the_docs_show_each_client_library():
    libraries = {lib for b in CLIENT_BLOCKS for lib in ("huggingface_hub", "openai", "langchain_openai") if lib in b}
    assert libraries == {"huggingface_hub", "openai", "langchain_openai"}
    assert any(_generation(b) for b in CLIENT_BLOCKS)


@pytest.mark.parametrize("block", CLIENT_BLOCKS, ids=[f"block{i}" for i in range(len(CLIENT_BLOCKS))])
def test_docs_client_example_runs(servers, block):
    server = servers["generation" if _generation(block) else "tasks"]
    code = block.replace(URL, server.url)
    # the last line's value is what the reader sees in a REPL: print it, so an empty answer fails too
    lines = code.rstrip().splitlines()
    k = max(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    last = lines[k]
    if not last.startswith((" ", "print(", "for ", ")")) and "=" not in last.split("(")[0]:
        lines[k] = f"print(repr({last}))"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n".join(lines), f"{DOC}:block", "exec"), {})
    assert out.getvalue().strip(), "the example printed nothing"
