"""``onnxpipe serve`` with test-only faults patched in, so a serve test can make a state certain (the model
busy, a tokenization in progress, a bug) instead of hoping a request is still running when the next arrives.

Run as ``python tests/_serve_hooks.py serve ARGS...`` (``_serve_util.Server(..., hooks=True)`` does). Each
line on stdin opens the gate once more (``Server.release()``); everything else is the real server:
- the inference threads wait at the gate before each round they take from the queue (``Batcher._serve``,
  padded batches) and before each request's first input (``Batcher._serve_alone``, inputs run alone), so a
  request stays in flight, its job queued, until the test releases it;
- a text ``"__block__"`` waits at the gate where the server cleans texts (``clean_texts``, called by
  ``/tokenize`` before the tokenizer), and a text that starts with it where the pipelines tokenize
  (``AutoTokenizer.encode_batch``);
- a text ``"__boom__"`` raises RuntimeError there: a bug, which the client sees as a 500;
- inputs with the token ``crash`` make an inference thread raise (``Pipeline.execute_batch``): a bug there;
- each model call on an inference thread prints ``onnxpipe-test: model call`` to stderr;
- the generation decoder waits at the gate before each decode step (``Decoder._step``).
"""

from __future__ import annotations

import sys
import threading

from onnxpipe import _model, _tokenizer
from onnxpipe._cli import main
from onnxpipe._pipelines import _base
from onnxpipe._serve import _app, _batcher, _decoding

_gate = threading.Semaphore(0)


def _read_stdin() -> None:
    for _ in sys.stdin:
        _gate.release()


def _wait_at_gate() -> None:
    print("onnxpipe-test: at the gate", file=sys.stderr, flush=True)
    _gate.acquire()


_serve = _batcher.Batcher._serve


def serve_gated(self, jobs):  # type: ignore[no-untyped-def]
    _wait_at_gate()
    return _serve(self, jobs)


_serve_alone = _batcher.Batcher._serve_alone


def serve_alone_gated(self, job, index, *args):  # type: ignore[no-untyped-def]
    if index == 0:
        _wait_at_gate()
    return _serve_alone(self, job, index, *args)


_clean = _app.clean_texts


def clean_texts(items):  # type: ignore[no-untyped-def]
    if "__boom__" in items:
        raise RuntimeError("a bug planted by the test")
    if "__block__" in items:
        _wait_at_gate()
    return _clean(items)


_run = _model.OnnxModel.run


def run_counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    if threading.current_thread().name == "onnxpipe-inference":
        print("onnxpipe-test: model call", file=sys.stderr, flush=True)
    return _run(self, *args, **kwargs)


_execute_batch = _base.Pipeline.execute_batch


def execute_or_crash(self, encodings, *args, **kwargs):  # type: ignore[no-untyped-def]
    if any("crash" in e.tokens for e in encodings):
        raise RuntimeError("the inference thread crashed (planted by the test)")
    return _execute_batch(self, encodings, *args, **kwargs)


_step = _decoding.Decoder._step


def step_gated(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    _wait_at_gate()
    return _step(self, *args, **kwargs)


_decoding.Decoder._step = step_gated  # type: ignore[method-assign]
_base.Pipeline.execute_batch = execute_or_crash  # type: ignore[method-assign]
_encode_batch = _tokenizer.AutoTokenizer.encode_batch


def encode_batch_gated(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
    if any(isinstance(t, str) and t.startswith("__block__") for t in texts):
        _wait_at_gate()
    return _encode_batch(self, texts, *args, **kwargs)


_tokenizer.AutoTokenizer.encode_batch = encode_batch_gated  # type: ignore[method-assign]
_batcher.Batcher._serve = serve_gated  # type: ignore[method-assign]
_batcher.Batcher._serve_alone = serve_alone_gated  # type: ignore[method-assign]
_app.clean_texts = clean_texts
_model.OnnxModel.run = run_counted  # type: ignore[method-assign]

if __name__ == "__main__":
    threading.Thread(target=_read_stdin, daemon=True).start()
    sys.exit(main(sys.argv[1:]))
