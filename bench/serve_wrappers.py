"""The two baseline servers of bench/serve_load.py: the minimal wrapper a user would write, one request at a
time, around (a) transformers' pipeline on PyTorch or (b) onnxpipe's pipeline; no batching across requests.

    python bench/serve_wrappers.py transformers --model ../shared/checkpoints/minilm-sst2 --port 8081
    python bench/serve_wrappers.py onnxpipe --model models/minilm-sst2 --port 8082

Both answer ``POST /predict {"inputs": "text"}`` with every label and score, as ``onnxpipe serve`` does, and
run the pipeline in starlette's thread pool (what a FastAPI ``def`` endpoint does).
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build(engine: str, model: str):
    if engine == "transformers":
        from transformers import pipeline

        pipe = pipeline("text-classification", model=model, top_k=None)

        def predict(text: str) -> list:
            out = pipe(text)
            return out[0] if out and isinstance(out[0], list) else out  # one text: its list of labels

        return predict
    from onnxpipe import pipeline

    pipe = pipeline("text-classification", model=model)
    return lambda text: pipe(text, top_k=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("engine", choices=["transformers", "onnxpipe"])
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    predict = build(args.engine, args.model)

    async def handler(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(await run_in_threadpool(predict, body["inputs"]))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/predict", handler, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
