"""Start a real ``onnxpipe serve`` in a subprocess on a free loopback port; shared by the serve tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "_serve_hooks.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process; ``url`` once it answers /health. Use as a context manager (always stopped).

    ``hooks=True`` runs it through ``_serve_hooks.py``: the model (and ``"__block__"`` texts) wait at a gate
    that ``release()`` opens once per call. The process's output is read as it comes (``output()``), so a
    server that logs a lot never blocks on a full pipe."""

    def __init__(self, *args: str, startup_s: float = 120.0, hooks: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        entry = [str(HOOKS)] if hooks else ["-m", "onnxpipe._cli"]
        cmd = [sys.executable, *entry, "serve", *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reader.join(10)
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {startup_s} s")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_output(self, needle: str, count: int = 1, timeout: float = 60.0) -> bool:
        """Wait until ``needle`` has appeared ``count`` times in the output (False after ``timeout``)."""
        with self._changed:
            return self._changed.wait_for(lambda: "".join(self._lines).count(needle) >= count, timeout)

    def release(self, times: int = 1) -> None:
        """Open the hooks' gate ``times`` more times (a line on the server's stdin each)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n" * times)
        self.proc.stdin.flush()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one Prometheus sample (0 when absent)."""
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(want + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def post(self, path: str, json=None, timeout: float = 60, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=json, timeout=timeout, **kw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(condition, timeout: float = 30.0, every: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return False


os.environ.setdefault("NO_PROXY", "127.0.0.1")  # never route loopback requests through a proxy
