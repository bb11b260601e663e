"""docs/serve.md's and README.md's client examples run, unchanged but for the port, against real servers: the
one-per-library examples (huggingface_hub, openai, LangChain) against minilm-sst2 with an embedding model named
``emb``, and the generation example (openai streaming a chat, huggingface_hub's text_generation) against a tiny
Llama named ``smollm``. A block that raises fails its case; each block's printed output must not be empty."""

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

DOCS = {"serve": ROOT / "docs" / "serve.md", "readme": ROOT / "README.md"}
URL = "http://127.0.0.1:8080"


def _client_blocks(page: str) -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS[page].read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if URL in b]


CLIENT_BLOCKS = [(page, b) for page in DOCS for b in _client_blocks(page)]


def _generation(block: str) -> bool:
    return "chat.completions" in block or "text_generation" in block


@pytest.fixture(scope="module")
def servers(tiny_export):
    emb = tiny_export("bert", "feature-extraction")
    llama = tiny_export("llama", "text-generation", precisions="fp32")
    with Server(f"minilm-sst2={ROOT / 'models' / 'minilm-sst2'}", f"emb={emb}") as tasks:
        with Server(f"smollm={llama}") as generation:
            yield {"tasks": tasks, "generation": generation}


@pytest.mark.parametrize("page", list(DOCS))
def test_the_docs_show_each_client_library(page):
    blocks = _client_blocks(page)
    libraries = {lib for b in blocks for lib in ("huggingface_hub", "openai", "langchain_openai") if lib in b}
    assert libraries == {"huggingface_hub", "openai", "langchain_openai"}
    if page == "serve":
        assert any(_generation(b) for b in blocks)


@pytest.mark.parametrize(
    ("page", "block"), CLIENT_BLOCKS, ids=[f"{p}-block{i}" for i, (p, _) in enumerate(CLIENT_BLOCKS)]
)
def test_docs_client_example_runs(servers, page, block):
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
        exec(compile("\n".join(lines), f"{DOCS[page]}:block", "exec"), {})
    assert out.getvalue().strip(), "the example printed nothing"
