"""A static file server for the browser demo, on loopback only: the page at ``/``, model folders at ``/models/``,
and transformers.js's browser build and onnxruntime-web's .wasm files at ``/vendor/`` from the npm package that
tests/interop/envs.py installs (``npm install @huggingface/transformers``, built once into the machine's test
cache). The page fetches nothing else: no CDN, no hub.

    python examples/browser/serve.py [--port 8000] [--models DIR]
    # then open http://127.0.0.1:8000/   (?model=NAME&dtype=q8|fp32&threads=N)

Responses carry ``Cache-Control: no-store``, so a reload measures a real load.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "interop"))
import envs  # noqa: E402  (the one place the npm install happens, cached)

TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}


def mounts(models: Path) -> dict[str, Path]:
    """URL prefix -> folder served under it (longest prefix first), building the npm environment if needed."""
    node_modules = envs.ensure("transformers.js") / "node_modules"
    return {
        "/vendor/transformers/": node_modules / "@huggingface" / "transformers" / "dist",
        "/vendor/ort/": node_modules / "onnxruntime-web" / "dist",
        "/models/": Path(models).resolve(),
        "/": HERE,
    }


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}
    routes: dict[str, Path] = {}
    requested: list[str] = []
    quiet = True

    def translate_path(self, path: str) -> str:
        # the base class resolves the rest of the URL under one folder, refusing '..' out of it
        for prefix, folder in self.routes.items():
            if path.split("?", 1)[0].startswith(prefix):
                self.directory = str(folder)
                return super().translate_path("/" + path[len(prefix) :])
        return str(HERE / "missing")

    def send_head(self):  # noqa: ANN201 (the base class's signature)
        self.requested.append(self.path)
        return super().send_head()

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.quiet:
            super().log_message(format, *args)


class DemoServer:
    """The server in a background thread, as a context manager (the browser test uses it):

    >>> with DemoServer() as server:  # doctest: +SKIP
    ...     print(server.url)         # http://127.0.0.1:PORT
    """

    def __init__(self, models: Path = ROOT / "models", port: int = 0, quiet: bool = True) -> None:
        self.requested: list[str] = []  # every path asked for, in order
        handler = type("Handler", (_Handler,), {"routes": mounts(models), "quiet": quiet, "requested": self.requested})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> DemoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000, help="loopback port (default 8000)")
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="folder of model folders (default models/)")
    args = ap.parse_args()
    with DemoServer(args.models, args.port, quiet=False) as server:
        print(f"serving {args.models} and the demo at {server.url}/ (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
