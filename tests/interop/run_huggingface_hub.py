"""Run huggingface_hub ``InferenceClient`` calls against servers, in the consumer's own environment.

Reads a JSON list of calls on stdin: ``{"id", "url", "method", "args", "kwargs", "stream"}``; writes one JSON
object per call to stdout: ``{"id", "version", "result"}`` or ``{"id", "version", "error"}`` (the exception's type
and message, so the test shows what the client raised). Results become plain JSON: dataclasses as dicts, arrays as
lists, a stream as the list of its items.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import huggingface_hub
from huggingface_hub import InferenceClient


def plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return x.tolist()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def main() -> int:
    for call in json.load(sys.stdin):
        out: dict[str, Any] = {"id": call["id"], "version": huggingface_hub.__version__}
        try:
            client = InferenceClient(call["url"], timeout=120)
            result = getattr(client, call["method"])(*call.get("args", []), **call.get("kwargs", {}))
            out["result"] = plain(list(result) if call.get("stream") else result)
        except Exception as e:  # reported, not raised: the test names the call that failed
            out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
