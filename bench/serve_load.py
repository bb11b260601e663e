"""Load test of ``onnxpipe serve`` against the one-request-at-a-time wrappers, on loopback only.

    PYTHONPATH=runtime python bench/serve_load.py              # full: N = 1, 8, 32, 64; 10,000 requests each
    PYTHONPATH=runtime python bench/serve_load.py --smoke --out /tmp/x   # seconds: N = 2, a few requests
    PYTHONPATH=runtime:export python bench/serve_load.py --level generation   # chat clients on a decoder
    PYTHONPATH=runtime python bench/serve_load.py --level wrk                 # wrk vs offline pipe

SST-2 dev sentences go as single-sentence ``POST /predict`` requests from N concurrent keep-alive clients
(a small raw-asyncio HTTP/1.1 client, on uvloop where installed, so the client costs little of the CPU the
servers share; its CPU per request is reported too). Each server runs in its own process: ``onnxpipe serve``
with its default execution (dynamic int8: every input alone, so an answer never depends on other requests)
and with ``--execution batched`` (padded batches across requests), (a) transformers' pipeline on PyTorch and
(b) onnxpipe's pipeline, both in the minimal wrapper of bench/serve_wrappers.py. Every level stops at
``--requests`` requests or ``--seconds`` seconds, whichever comes first: the targets need 10,000 requests at
64 clients, which the defaults allow on a quiet 2-core machine. Then the overload check: a server limited to
a few concurrent requests, hit by many clients at once, must answer 429 fast and serve the rest. Writes
serve_load.json and serve_load.md (command, git commit, machine) to ``--out`` (bench/results).

``--level generation`` and ``--level wrk`` run bench/serve_levels.py's levels instead (see there) and write
serve_generation.{json,md} or serve_wrk.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "runtime"))
import serve_levels as levels_mod  # noqa: E402
from onnxpipe._bench import machine_info  # noqa: E402
from provenance import write_report  # noqa: E402
from workloads import read_sst2  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
CONCURRENCY = (1, 8, 32, 64)
REQUESTS = 10_000  # per level at most (the targets ask 10,000 at 64 clients)
SECONDS = 600.0  # per level at most: a bound, not the usual stop
WARMUP = 50  # requests per server before the first level
OVERLOAD = {"limit": 4, "clients": 64, "rounds": 10}
ONNX_MODEL = ROOT / "models" / "minilm-sst2"
TORCH_MODEL = ROOT.parent / "shared" / "checkpoints" / "minilm-sst2"
SMOKE = {
    "concurrency": (2,),
    "requests": 20,
    "seconds": 20.0,
    "warmup": 2,
    "overload": {"limit": 1, "clients": 4, "rounds": 2},
}


def _serve(*options: str):
    """``onnxpipe serve`` on the shipped model with a concurrency limit that never refuses the load test;
    ``extra``: the run's ``--serve-args``."""
    return lambda port, extra=(): [sys.executable, "-m", "onnxpipe._cli", "serve", str(ONNX_MODEL), "--port",
                                   str(port), "--max-concurrent-requests", "512", *options, *extra]  # fmt: skip


def _wrapper(kind: str, model: Path):
    """serve_wrappers.py's one-request-at-a-time server around ``kind``'s pipeline."""
    return lambda port, extra=(): [sys.executable, str(HERE / "serve_wrappers.py"), kind, "--model", str(model),
                                   "--port", str(port)]  # fmt: skip


ENGINES = {
    "onnxpipe-serve": _serve(),
    "onnxpipe-serve-batched": _serve("--execution", "batched"),
    "onnxpipe-unbatched": _wrapper("onnxpipe", ONNX_MODEL),
    "transformers": _wrapper("transformers", TORCH_MODEL),
}


# ---- a minimal keep-alive HTTP/1.1 client --------------------------------------------------------------------
class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int):
        self.reader, self.writer, self.port = reader, writer, port

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        payload = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return status, payload

    def close(self) -> None:
        self.writer.close()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def load(port: int, texts: list[str], clients: int, requests: int, seconds: float) -> dict:
    bodies = [json.dumps({"inputs": t}).encode() for t in texts]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_index = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal next_index
        conn = await Connection.open(port)
        try:
            while next_index < requests and time.perf_counter() < deadline:
                body = bodies[next_index % len(bodies)]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.post("/predict", body)
                except (OSError, asyncio.IncompleteReadError) as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    conn.close()
                    conn = await Connection.open(port)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(1e3 * _pct(latencies, 0.5), 3),
        "p99_ms": round(1e3 * _pct(latencies, 0.99), 3),
    }


async def overload(port: int, text: str, clients: int, rounds: int) -> dict:
    """Many clients at once against a small --max-concurrent-requests: how fast 429 comes, and the rest are fine."""
    body = json.dumps({"inputs": text}).encode()
    refused, served, other = [], 0, {}
    for _ in range(rounds):
        conns = await asyncio.gather(*(Connection.open(port) for _ in range(clients)))

        async def one(conn: Connection) -> None:
            nonlocal served
            t0 = time.perf_counter()
            status, _ = await conn.post("/predict", body)
            if status == 429:
                refused.append(time.perf_counter() - t0)
            elif status == 200:
                served += 1
            else:
                other[str(status)] = other.get(str(status), 0) + 1

        await asyncio.gather(*(one(c) for c in conns))
        for c in conns:
            c.close()
    return {
        "clients": clients,
        "rounds": rounds,
        "refused_429": len(refused),
        "served_200": served,
        "other": other,
        "p50_429_ms": round(1e3 * _pct(refused, 0.5), 3),
        "p99_429_ms": round(1e3 * _pct(refused, 0.99), 3),
        "max_429_ms": round(1e3 * max(refused), 3) if refused else None,
    }


# ---- servers ------------------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server in its own process, started with ``cmd`` (``runtime`` first on its PYTHONPATH) and waited for
    until /health answers 200; ``stop`` sends SIGTERM (SIGKILL after 60 s)."""

    def __init__(self, cmd: list[str], port: int, runtime: Path = ROOT / "runtime"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(runtime), os.environ.get("PYTHONPATH", "")])}
        self.port = port
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]!r}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{cmd} did not start within 180 s")

    def get(self, path: str) -> tuple[int, str]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def batch_stats(self) -> tuple[float, float]:
        """(rows, model calls) so far, from /metrics; (0, 0) for a server without them."""
        status, text = self.get("/metrics") if self.proc.poll() is None else (0, "")
        rows = calls = 0.0
        for line in text.splitlines() if status == 200 else []:
            if line.startswith("onnxpipe_batch_size_sum"):
                rows += float(line.rsplit(" ", 1)[1])
            elif line.startswith("onnxpipe_batch_size_count"):
                calls += float(line.rsplit(" ", 1)[1])
        return rows, calls

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc): on a machine shared with other
        jobs, CPU per request compares engines where wall-clock throughput cannot."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()


def offline(texts: list[str]) -> dict:
    """In-process figures: pipe(list) throughput over the sentences, and batch-1 latency, as the targets need."""
    from onnxpipe import pipeline

    pipe = pipeline("text-classification", model=ONNX_MODEL)
    pipe(texts[:32])
    best = min(_timed(lambda: pipe(texts)) for _ in range(3))
    single = [_timed(lambda t=t: pipe(t, top_k=None)) for t in texts[:300]]
    return {
        "sentences": len(texts),
        "list_per_s": round(len(texts) / best, 1),
        "batch1_p50_ms": round(1e3 * _pct(single, 0.5), 3),
        "batch1_p99_ms": round(1e3 * _pct(single, 0.99), 3),
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(coro):
    """asyncio.run, on uvloop where installed: the client then takes less of the CPU it shares with the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_engine(
    name: str, texts: list[str], levels, requests: int, seconds: float, warmup: int, extra: list[str]
) -> list[dict]:
    server = ServerProcess(ENGINES[name](port := free_port(), extra), port)
    rows = []
    try:
        run(load(port, texts, 1, warmup, seconds))
        for clients in levels:
            rows0, calls0 = server.batch_stats()
            cpu0, client0 = server.cpu_seconds(), time.process_time()
            result = run(load(port, texts, clients, requests, seconds))
            cpu1, client1 = server.cpu_seconds(), time.process_time()
            rows1, calls1 = server.batch_stats()
            result["server_cpu_ms_per_request"] = round(1e3 * (cpu1 - cpu0) / max(result["ok"], 1), 3)
            result["client_cpu_ms_per_request"] = round(1e3 * (client1 - client0) / max(result["requests"], 1), 3)
            result["mean_batch_size"] = round((rows1 - rows0) / (calls1 - calls0), 2) if calls1 > calls0 else 1.0
            result["engine"] = name
            rows.append(result)
            print(json.dumps(result), flush=True)
    finally:
        server.stop()
    return rows


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


def aggregate(per_round: list[dict], engines: list[str], levels) -> list[dict]:
    """One row per engine x clients over the rounds: counts summed, rates and latencies the median round's, and
    the best round's requests/s (outside load can only have slowed a round down)."""
    rows = []
    for engine in engines:
        for clients in levels:
            rs = [r for r in per_round if r["engine"] == engine and r["clients"] == clients]
            if not rs:
                continue
            kinds: dict[str, int] = {}
            for r in rs:
                for k, v in r["error_kinds"].items():
                    kinds[k] = kinds.get(k, 0) + v
            row = {"engine": engine, "clients": clients, "rounds": len(rs), "error_kinds": kinds}
            for key in ("requests", "ok", "errors", "seconds"):
                row[key] = sum(r[key] for r in rs)
            for key in ("requests_per_s", "p50_ms", "p99_ms", "mean_batch_size", "server_cpu_ms_per_request",
                        "client_cpu_ms_per_request"):  # fmt: skip
                row[key] = _median([r[key] for r in rs])
            row["best_requests_per_s"] = max(r["requests_per_s"] for r in rs)
            row["min_round_requests"] = min(r["requests"] for r in rs)
            row["per_round_requests_per_s"] = [r["requests_per_s"] for r in rs]
            rows.append(row)
    return rows


def markdown(report: dict) -> str:
    lines = [
        "# onnxpipe serve: load test",
        "",
        f"Command: `{report['command']}`  ",
        f"Commit: {report['commit']}  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, Python "
        f"{report['machine']['python']}, onnxruntime {report['machine']['onnxruntime']}  ",
        f"Load average (1 min): {report.get('loadavg', {}).get('start', '?')} at start, "
        f"{report.get('loadavg', {}).get('end', '?')} at the end (the servers' and the client's own threads count "
        "in it: torch's and onnxruntime's spinning workers are runnable; a start above the core count means other "
        "jobs shared the cores, and then only ratios and CPU per request compare).",
        *(
            [f"Every onnxpipe serve ran with `{' '.join(report['config']['serve_args'])}`."]
            if report.get("config", {}).get("serve_args")
            else []
        ),
        "",
        f"{report.get('config', {}).get('rounds', 1)} rounds, engines rotated per round; req/s is the median round's "
        "(best round beside it), requests and errors summed over the rounds, latencies and CPU the median round's.",
        "",
        "| engine | clients | requests | errors | req/s (best) | p50 ms | p99 ms | mean batch | server CPU ms/req "
        "| client CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["levels"]:
        best = f" ({r['best_requests_per_s']})" if "best_requests_per_s" in r else ""
        lines.append(
            f"| {r['engine']} | {r['clients']} | {r['requests']} | {r['errors']} | {r['requests_per_s']}{best} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['mean_batch_size']} | "
            f"{r.get('server_cpu_ms_per_request', '')} | {r.get('client_cpu_ms_per_request', '')} |"
        )
    o, off = report["overload"], report["offline"]
    lines += [
        "",
        f"Offline, in-process: pipe(list) of {off['sentences']} sentences {off['list_per_s']}/s; batch 1 "
        f"p50 {off['batch1_p50_ms']} ms, p99 {off['batch1_p99_ms']} ms.",
        "",
        f"Overload (--max-concurrent-requests {o['limit']}, {o['clients']} clients at once x {o['rounds']}): "
        f"{o['refused_429']} answered 429 (p50 {o['p50_429_ms']} ms, p99 {o['p99_429_ms']} ms, max "
        f"{o['max_429_ms']} ms), {o['served_200']} served 200, other statuses {o['other']}.",
        "",
        "## Targets",
        "",
        "| target | figure | met |",
        "| --- | --- | --- |",
    ]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


SERVE_ENGINES = ("onnxpipe-serve", "onnxpipe-serve-batched")  # the engines the targets are about


def targets(levels: list[dict], off: dict, over: dict) -> list[dict]:
    at = {(r["engine"], r["clients"]): r for r in levels}
    out = []
    top = max((r["clients"] for r in levels), default=0)
    for engine in SERVE_ENGINES:
        serve = at.get((engine, top))
        if serve:
            out.append(
                {
                    "target": f"{engine}, {top} clients: 0 errors over >= 10,000 requests (each round)",
                    "figure": f"{serve['errors']} errors / {serve['requests']}",
                    "met": serve["errors"] == 0 and serve.get("min_round_requests", serve["requests"]) >= 10_000,
                }
            )
            for other, factor in (("onnxpipe-unbatched", 3), ("transformers", 6)):
                if (other, top) in at:
                    theirs = max(at[(other, top)]["requests_per_s"], 1e-9)
                    ratio = serve["requests_per_s"] / theirs
                    # no server can pass the offline pipe(list) rate of the same sentences: the ratio's ceiling
                    ceiling = off["list_per_s"] / theirs
                    out.append(
                        {
                            "target": f"{engine}, {top} clients: >= {factor}x {other}",
                            "figure": f"{ratio:.2f}x (ceiling, offline pipe(list): {ceiling:.2f}x)",
                            "met": ratio >= factor,
                        }
                    )
            share = serve["requests_per_s"] / off["list_per_s"]
            out.append(
                {
                    "target": f"{engine}, {top} clients: >= 70 % of offline pipe(list)",
                    "figure": f"{100 * share:.0f} %",
                    "met": share >= 0.7,
                }
            )
        one = at.get((engine, 1))
        if one:
            gap = one["p99_ms"] - off["batch1_p99_ms"]
            out.append(
                {
                    "target": f"{engine}, 1 client: p99 within 1 ms of in-process batch 1 (p99)",
                    "figure": f"{gap:+.2f} ms",
                    "met": gap <= 1.0,
                }
            )
    if over.get("max_429_ms") is not None:
        out.append(
            {
                "target": "past the limit: 429 within 5 ms; admitted requests served",
                "figure": f"max {over['max_429_ms']} ms (p99 {over['p99_429_ms']}), {over['served_200']} served, "
                f"other {over['other']}",
                "met": over["max_429_ms"] <= 5 and over["served_200"] > 0 and not over["other"],
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {list(ENGINES)}")
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--requests", type=int, default=REQUESTS, help="per level, at most")
    p.add_argument("--seconds", type=float, default=SECONDS, help="per level, at most")
    p.add_argument("--smoke", action="store_true", help="seconds: N=2, a few requests (what pytest runs)")
    p.add_argument(
        "--serve-args",
        default="",
        help="more options for every onnxpipe serve started (load levels and overload), e.g. '--profile low-power'",
    )
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--level", choices=("sst2", "generation", "wrk"), default="sst2",
                   help="sst2: the load test above; generation / wrk: serve_levels.py's")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds: sst2 rotates engines per round, generation / wrk levels (--smoke: 1)")  # fmt: skip
    p.add_argument("--gen-model", type=Path, default=None,
                   help="generation: decoder folder (default: generate.py's llama-135m, built, cached)")  # fmt: skip
    p.add_argument("--gen-concurrency", default=",".join(map(str, levels_mod.GEN_CONCURRENCY)))
    p.add_argument("--gen-requests", type=int, default=levels_mod.GEN_REQUESTS, help="generation: per level")
    p.add_argument("--max-tokens", type=int, default=levels_mod.GEN_TOKENS, help="generation: per request")
    p.add_argument("--wrk-connections", default=",".join(map(str, levels_mod.WRK_CONNECTIONS)))
    p.add_argument("--wrk-seconds", type=float, default=levels_mod.WRK_SECONDS)
    p.add_argument("--offline-copies", type=int, default=levels_mod.OFFLINE_COPIES)
    p.add_argument("--note", action="append", default=[], help="generation / wrk: a paragraph for the table")
    p.add_argument("--runtime", action="append", default=[], metavar="LABEL=DIR",
                   help="wrk: a runtime/ folder to serve, side by side in the same rounds (repeatable)")  # fmt: skip
    args = p.parse_args(argv)
    if args.level != "sst2":
        return other_level(args)
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        p.error(f"unknown engines {unknown}; valid: {list(ENGINES)}")
    levels = tuple(int(x) for x in args.concurrency.split(","))
    requests, seconds, warmup, over_cfg = args.requests, args.seconds, WARMUP, OVERLOAD
    if args.smoke:
        levels, requests, seconds = SMOKE["concurrency"], SMOKE["requests"], SMOKE["seconds"]
        warmup, over_cfg = SMOKE["warmup"], SMOKE["overload"]
    load_start = round(os.getloadavg()[0], 2)
    texts, _ = read_sst2()
    off = offline(texts if not args.smoke else texts[:32])
    print(json.dumps({"offline": off}), flush=True)
    extra = shlex.split(args.serve_args)
    # Engines rotate per round (each server started afresh, all levels, then stopped), so outside load on the
    # shared machine spreads over every engine; the table shows the median and the best round per level.
    rounds = 1 if args.smoke else args.rounds
    per_round = [
        {**r, "round": rnd}
        for rnd in range(rounds)
        for name in levels_mod.rotated(engines, rnd)
        for r in run_engine(name, texts, levels, requests, seconds, warmup, extra)
    ]
    rows = aggregate(per_round, engines, levels)
    port = free_port()
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "onnxpipe._cli",
            "serve",
            str(ONNX_MODEL),
            "--port",
            str(port),
            "--max-concurrent-requests",
            str(over_cfg["limit"]),
            *extra,
        ],
        port,
    )
    try:
        over = {
            "limit": over_cfg["limit"],
            **run(overload(port, texts[0], over_cfg["clients"], over_cfg["rounds"])),
        }
    finally:
        server.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit.strip(),
        "machine": machine_info(),
        "loadavg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "offline": off,
        "levels": rows,
        "overload": over,
        "config": {
            "requests": requests,
            "seconds": seconds,
            "levels": list(levels),
            "serve_args": extra,
            "rounds": rounds,
        },
    }
    report["targets"] = targets(rows, off, over)
    print(write_report(args.out, "serve_load", report, markdown))
    return 0


def other_level(args: argparse.Namespace) -> int:
    """The generation or wrk level (bench/serve_levels.py), with this file's servers and provenance."""
    load_start = round(os.getloadavg()[0], 2)
    texts, _ = read_sst2()
    extra = shlex.split(args.serve_args)
    if args.level == "generation":
        folder = args.gen_model or levels_mod.decoder_folder()
        levels = tuple(int(x) for x in args.gen_concurrency.split(","))
        result = levels_mod.generation(
            ServerProcess, free_port, folder, texts, levels, args.gen_requests, args.max_tokens, args.rounds, extra
        )
        config = {"model": str(args.gen_model or levels_mod.GEN_MODEL), "requests": args.gen_requests,
                  "max_tokens": args.max_tokens, "rounds": args.rounds, "levels": list(levels)}  # fmt: skip
        stem, key, markdown_of = "serve_generation", "generation", levels_mod.generation_markdown
    else:
        conns = tuple(int(x) for x in args.wrk_connections.split(","))
        runtimes = {label: Path(folder) for label, folder in (r.split("=", 1) for r in args.runtime)} or None
        result = levels_mod.wrk_level(ServerProcess, free_port, ONNX_MODEL, texts[0], conns, args.wrk_seconds,
                                      args.rounds, args.offline_copies, extra, runtimes)  # fmt: skip
        config = {"model": str(ONNX_MODEL.relative_to(ROOT)), "seconds": args.wrk_seconds, "rounds": args.rounds,
                  "connections": list(conns), "runtimes": {k: str(v) for k, v in (runtimes or {}).items()}}  # fmt: skip
        stem, key, markdown_of = "serve_wrk", "wrk", levels_mod.wrk_markdown
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": commit.strip(),
        "machine": machine_info(),
        "simd": levels_mod.simd(),
        "loadavg": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "config": {**config, "serve_args": extra},
        "notes": list(args.note),
        key: result,
    }
    print(write_report(args.out, stem, report, markdown_of))
    return 0


if __name__ == "__main__":
    sys.exit(main())
