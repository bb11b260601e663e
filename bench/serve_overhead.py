"""What ``onnxpipe serve`` costs per request besides the model: server CPU per single-sentence POST /predict,
split into the event-loop thread and the rest, for each HTTP stack; and what one 429 refusal costs.

    PYTHONPATH=runtime python bench/serve_overhead.py             # ~5 minutes on 2 cores
    PYTHONPATH=runtime python bench/serve_overhead.py --smoke --out /tmp/x   # seconds

CPU time rather than wall-clock, so the figures survive a machine shared with other jobs: the whole server
from /proc/PID/stat (clock ticks), its main thread from /proc/PID/task/PID/schedstat (nanoseconds; also the
time it sat runnable waiting for a core), read before and after N requests that this process sends over
keep-alive connections. The main thread is uvicorn's event loop: it parses HTTP and JSON, validates,
tokenizes, awaits the batcher's futures and writes the response. The rest of the process is the inference
thread and onnxruntime's pool: the model's share, compared with ``pipe(text)``'s CPU per call in this process.
Contention still inflates CPU time (cold caches after every wait), so rounds alternate between the stacks and
the median round is reported.

Stacks: httptools + uvloop (what the serve extra installs) and h11 + asyncio (the fallback, forced by making
httptools and uvloop unimportable in the server process). ``--runtime LABEL=DIR`` (repeatable) serves another
checkout's ``runtime/`` folder, to compare commits. Writes serve_overhead.json and .md to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import markdown as provenance_lines, provenance, rel, write_report  # noqa: E402
from serve_load import ONNX_MODEL, Connection, ServerProcess, _pct, free_port  # noqa: E402
from workloads import read_sst2  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
STACKS = {"httptools+uvloop": (), "h11+asyncio": ("httptools", "uvloop")}  # stack: modules hidden from the server
CLIENTS = (1, 16)
REQUESTS = 1000  # per level and round
ROUNDS = 3
WARMUP = 50
# 429s sent while one long request (`busy` inputs of 512 tokens) keeps the model busy
REFUSALS = {"clients": 8, "requests": 2000, "busy": 32}
LONG = " ".join(["the movie was long and the story kept going"] * 60)  # over 512 tokens: truncated to 512
SMOKE = {
    "clients": (2,),
    "requests": 20,
    "rounds": 1,
    "warmup": 2,
    "refusals": {"clients": 2, "requests": 10, "busy": 8},
}

# Runs `onnxpipe serve` with some modules made unimportable (sys.modules[name] = None makes `import` fail).
LAUNCH = (
    "import sys\n"
    "for name in filter(None, sys.argv.pop(1).split(',')): sys.modules[name] = None\n"
    "from onnxpipe._cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process, from /proc/PID/stat (in clock ticks: 10 ms)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int, tid: int) -> tuple[float, float]:
    """(CPU time, time spent runnable but waiting for a core) of one thread, in ns from /proc's schedstat
    where the kernel keeps it, else CPU time in clock ticks and NaN."""
    try:
        run_ns, wait_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), float("nan")


class Server(ServerProcess):
    """``onnxpipe serve`` from the sources at ``runtime``, with the modules in ``hidden`` made unimportable (so
    the server falls back to the stack without them)."""

    def __init__(self, runtime: Path, hidden: tuple[str, ...], *args: str):
        port = free_port()
        cmd = [sys.executable, "-c", LAUNCH, ",".join(hidden), "serve", str(ONNX_MODEL), "--port", str(port)]
        super().__init__([*cmd, *args], port, runtime)
        self.stack = self.proc.stderr.readline().decode().strip()  # the start-up line names the stack

    def cpu(self) -> tuple[float, float, float]:
        """Seconds so far: process CPU, main-thread CPU, main thread runnable but waiting for a core."""
        return (cpu_seconds(self.proc.pid), *thread_seconds(self.proc.pid, self.proc.pid))


async def send(port: int, bodies: list[bytes], clients: int, requests: int) -> list[tuple[int, float]]:
    """(status, seconds) per request, from ``clients`` keep-alive connections."""
    conns = [await Connection.open(port) for _ in range(clients)]
    answers: list[tuple[int, float]] = []
    sent = 0

    async def client(conn: Connection) -> None:
        nonlocal sent
        while sent < requests:
            body = bodies[sent % len(bodies)]
            sent += 1
            t0 = time.perf_counter()
            status, _ = await conn.post("/predict", body)
            answers.append((status, time.perf_counter() - t0))

    try:
        await asyncio.gather(*(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return answers


def _count(answers: list[tuple[int, float]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for status, _ in answers:
        out[status] = out.get(status, 0) + 1
    return out


def per_request(server: Server, bodies: list[bytes], clients: int, requests: int) -> dict:
    p0, m0, w0 = server.cpu()
    t0 = time.perf_counter()
    answers = asyncio.run(send(server.port, bodies, clients, requests))
    wall = time.perf_counter() - t0
    p1, m1, w1 = server.cpu()
    if _count(answers) != {200: requests}:
        raise RuntimeError(f"expected {requests} answers 200, got {_count(answers)}")
    latencies = [t for _, t in answers]
    return {
        "process_cpu_ms": 1e3 * (p1 - p0) / requests,
        "loop_cpu_ms": 1e3 * (m1 - m0) / requests,
        "loop_wait_ms": 1e3 * (w1 - w0) / requests,
        "p50_ms": 1e3 * _pct(latencies, 0.5),
        "p99_ms": 1e3 * _pct(latencies, 0.99),
        "requests_per_s": requests / wall,
    }


def refusals(server: Server, body: bytes, clients: int, requests: int, busy: int) -> dict:
    """429s while one long request keeps the model busy: the event loop's CPU per refusal and its latency."""
    import threading

    import httpx

    url = f"http://127.0.0.1:{server.port}/predict"
    long_request = {"inputs": [LONG] * busy, "truncate": True}
    worker = threading.Thread(target=lambda: httpx.post(url, json=long_request, timeout=600))
    worker.start()
    deadline = time.monotonic() + 120
    while _queued(server) < 1:  # tokenized and queued: from here on the event loop only answers the others
        if time.monotonic() > deadline or not worker.is_alive():
            raise RuntimeError("the long request never reached the queue")
        time.sleep(0.005)
    _, m0, w0 = server.cpu()
    answers = asyncio.run(send(server.port, [body], clients, requests))
    _, m1, w1 = server.cpu()
    still_busy = worker.is_alive()
    worker.join()
    statuses = _count(answers)
    refused = [t for status, t in answers if status == 429]
    return {
        "refused": statuses.get(429, 0),
        "other": {str(k): v for k, v in statuses.items() if k != 429},
        "model_busy_throughout": still_busy,
        "loop_cpu_us_per_refusal": round(1e6 * (m1 - m0) / requests, 1),
        "loop_wait_us_per_refusal": round(1e6 * (w1 - w0) / requests, 1),
        "p50_ms": round(1e3 * _pct(refused, 0.5), 3),
        "p99_ms": round(1e3 * _pct(refused, 0.99), 3),
        "max_ms": round(1e3 * max(refused), 3) if refused else None,
    }


def _queued(server: Server) -> float:
    for line in server.get("/metrics")[1].splitlines():
        if line.startswith("onnxpipe_queue_depth{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def in_process(texts: list[str], n: int) -> dict:
    """pipe(text, top_k=None) in this process: the model's own CPU per single-sentence call."""
    sys.path.insert(0, str(ROOT / "runtime"))
    from onnxpipe import pipeline

    pipe = pipeline("text-classification", model=ONNX_MODEL)
    for t in texts[:20]:
        pipe(t, top_k=None)
    p0, t0 = time.process_time(), time.perf_counter()
    for t in texts[:n]:
        pipe(t, top_k=None)
    return {"process_cpu_ms": 1e3 * (time.process_time() - p0) / n, "wall_ms": 1e3 * (time.perf_counter() - t0) / n}


def markdown(report: dict) -> str:
    lines = ["# onnxpipe serve: CPU per request besides the model", "", *provenance_lines(report["provenance"])]
    lines += [
        f"Load average at the end: {report['loadavg_1min_at_end']}. CPU time is less distorted by other jobs than "
        "wall-clock, not immune: compare rows of one run, not runs on different machines.",
        "",
        f"Median of {report['config']['rounds']} alternating rounds of {report['config']['requests']} "
        "single-sentence POST /predict per row. loop: the server's main thread (uvicorn's event loop: HTTP, "
        "JSON, validation, tokenization, futures, response); process: the whole server, model included. "
        f"In-process pipe(text, top_k=None): {report['in_process']['process_cpu_ms']:.2f} ms CPU per call.",
        "",
        "| runtime | stack | clients | loop CPU ms/req | loop waiting for a core ms/req | process CPU ms/req | req/s "
        "| p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['stack']} | {r['clients']} | {r['loop_cpu_ms']:.3f} | {r['loop_wait_ms']:.3f} | "
            f"{r['process_cpu_ms']:.2f} | "
            f"{r['requests_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
        )
    lines += [
        "",
        f"Refusals: --max-concurrent-requests 1, one request of {report['config']['refusals']['busy']} x 512 tokens "
        "in flight, "
        f"{report['config']['refusals']['requests']} more from {report['config']['refusals']['clients']} clients.",
        "",
        "| runtime | stack | refused | other | model busy throughout | loop CPU us/refusal | loop waiting us/refusal "
        "| p50 ms | p99 ms | max ms |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["refusals"]:
        lines.append(
            f"| {r['runtime']} | {r['stack']} | {r['refused']} | {r['other'] or '-'} | "
            f"{'yes' if r['model_busy_throughout'] else 'no'} | {r['loop_cpu_us_per_refusal']} | "
            f"{r['loop_wait_us_per_refusal']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['max_ms']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated, of {list(STACKS)}")
    p.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    p.add_argument("--requests", type=int, default=REQUESTS, help="per level and round")
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument(
        "--runtime", action="append", metavar="LABEL=DIR", help="runtime/ folders to serve (default: this checkout's)"
    )
    p.add_argument("--smoke", action="store_true", help="seconds: a few requests, one round")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    stacks = [s for s in args.stacks.split(",") if s]
    if sorted(set(stacks) - set(STACKS)):
        p.error(f"unknown stacks {sorted(set(stacks) - set(STACKS))}; valid: {list(STACKS)}")
    if "httptools+uvloop" in stacks and not all(importlib.util.find_spec(m) for m in ("httptools", "uvloop")):
        print("httptools+uvloop: not installed here (pip install httptools uvloop); skipped", file=sys.stderr)
        stacks.remove("httptools+uvloop")
    levels = tuple(int(x) for x in args.clients.split(","))
    requests, rounds, warmup, refuse = args.requests, args.rounds, WARMUP, REFUSALS
    if args.smoke:
        levels, requests, rounds = SMOKE["clients"], SMOKE["requests"], SMOKE["rounds"]
        warmup, refuse = SMOKE["warmup"], SMOKE["refusals"]
    runtimes = dict(r.split("=", 1) for r in args.runtime) if args.runtime else {"this": str(ROOT / "runtime")}
    prov = provenance(__file__, argv)
    texts, _ = read_sst2()
    bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    reference = in_process(texts, min(300, requests))
    print(json.dumps({"in_process": reference}), flush=True)

    samples: dict[tuple[str, str, int], list[dict]] = {}
    refused: list[dict] = []
    for round_ in range(rounds):
        for runtime, folder in runtimes.items():
            for stack in stacks:
                server = Server(Path(folder).resolve(), STACKS[stack])
                try:
                    asyncio.run(send(server.port, bodies, 1, warmup))
                    for clients in levels:
                        row = per_request(server, bodies, clients, requests)
                        samples.setdefault((runtime, stack, clients), []).append(row)
                        print(json.dumps({"round": round_, "runtime": runtime, "stack": stack, **row}), flush=True)
                finally:
                    server.stop()
                if round_ == 0:
                    server = Server(Path(folder).resolve(), STACKS[stack], "--max-concurrent-requests", "1")
                    try:
                        row = {"runtime": runtime, "stack": stack, **refusals(server, bodies[0], **refuse)}
                    finally:
                        server.stop()
                    refused.append(row)
                    print(json.dumps(row), flush=True)

    rows = []
    for (runtime, stack, clients), got in samples.items():
        median = {k: statistics.median(r[k] for r in got) for k in got[0]}
        rows.append({"runtime": runtime, "stack": stack, "clients": clients, "rounds": len(got), **median})
    report = {
        "provenance": prov,
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "config": {
            "requests": requests,
            "rounds": rounds,
            "levels": list(levels),
            "refusals": refuse,
            "runtimes": {k: rel(v) for k, v in runtimes.items()},
        },
        "in_process": reference,
        "rows": rows,
        "refusals": refused,
    }
    print(write_report(args.out, "serve_overhead", report, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
