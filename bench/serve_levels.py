"""serve_load.py's two other levels: generation over HTTP, and wrk against offline ``pipe``.

* ``generation``: 1, 4 and 8 concurrent OpenAI-style chat clients (``POST /v1/chat/completions``, greedy, a fixed
  ``max_tokens``, ``stream: true`` so time to first token is seen) against one ``onnxpipe serve`` of a decoder
  folder. Every level sends the same requests; 1 client is those requests one at a time, the baseline. Levels
  are rotated per round; aggregate tokens/s (completion tokens from ``usage`` over the level's wall time) and
  TTFT p50/p90 (request sent -> first chunk with text) per level, median and best round.
* ``wrk``: ``wrk`` (one thread, a Lua script that POSTs one SST-2 sentence's JSON to ``/predict``) at 1 and 32
  connections, against offline ``pipe(list)`` of that sentence repeated and ``pipe(text)`` one by one, all in
  the same run and rotated per round. wrk is C: the load generator is not what limits the server. With
  ``--runtime LABEL=DIR`` (repeatable) one server per runtime folder runs beside the others, and each one's wrk
  levels join the rotation: old and new code measured in the same rounds, against the same offline figures.

The random-weight decoder comes from bench/generate.py's builder (its ``llama-135m`` config) and export, cached
under bench/.cache/generate.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

GEN_CONCURRENCY = (1, 4, 8)
GEN_REQUESTS = 8  # the same requests at every level
GEN_TOKENS = 64
GEN_MODEL = "llama-135m"  # bench/generate.py's config name
WRK_CONNECTIONS = (1, 32)
WRK_SECONDS = 10.0
OFFLINE_COPIES = 512  # pipe(list) of the sentence this many times; pipe(text) as many calls


def decoder_folder(name: str = GEN_MODEL) -> Path:
    """bench/generate.py's random-weight checkpoint of ``name`` with its tokenizer made to cover the model's
    vocabulary, exported (cached: built once, beside generate.py's own folders)."""
    import generate

    ckpt = generate.build_checkpoint(name, generate.CACHE / f"{name}-serve-ckpt")
    cover_vocab(ckpt)
    return generate.export_folder(ckpt, generate.CACHE / f"{name}-serve-onnx")


def cover_vocab(ckpt: Path) -> None:
    """Give every token id the model can choose a text. The builder's tokenizer is tests/_tiny.py's 600-token
    BPE, and a random-weight model picks ids far past it (greedy repeats one such id), which decode to nothing:
    the server then streams no chunk at all, and time to first token cannot be seen. Plain added tokens
    ``<tN>`` for the ids past the BPE's fill the gap; the model is unchanged."""
    from tokenizers import Tokenizer

    path = ckpt / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    have, want = tok.get_vocab_size(), json.loads((ckpt / "config.json").read_text())["vocab_size"]
    if have < want:
        tok.add_tokens([f"<t{i}>" for i in range(have, want)])
        assert tok.get_vocab_size() == want and tok.token_to_id(f"<t{want - 1}>") == want - 1
        tok.save(str(path))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


# ---- generation ---------------------------------------------------------------------------------------------
def chat_prompts(texts: list[str], n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Say more about this: {t}"}] for t in texts[:n]]


async def _chat(client, messages: list[dict], max_tokens: int) -> dict:
    """One streamed greedy chat completion: TTFT, completion tokens (from usage), text; or the error."""
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft, text, tokens = None, "", None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return {"error": str(r.status_code)}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        ttft = time.perf_counter() - t0 if ttft is None else ttft
                        text += piece
    except Exception as e:  # a dropped connection or a bad chunk is an error of the level, counted
        return {"error": type(e).__name__}
    if tokens is None:
        return {"error": "no usage"}
    return {"ttft": ttft, "tokens": tokens, "text": text, "seconds": time.perf_counter() - t0}


async def chat_level(port: int, prompts: list[list[dict]], clients: int, max_tokens: int) -> dict:
    """``clients`` concurrent clients, each taking the next of ``prompts`` until none is left."""
    import httpx

    results: list[dict | None] = [None] * len(prompts)
    queue = list(range(len(prompts)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as client:

        async def worker() -> None:
            while queue:
                i = queue.pop(0)
                results[i] = await _chat(client, prompts[i], max_tokens)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    done = [r for r in results if r and "error" not in r]
    errors: dict[str, int] = {}
    for r in results:
        if r is None or "error" in r:
            kind = r["error"] if r else "not run"
            errors[kind] = errors.get(kind, 0) + 1
    ttfts = [r["ttft"] for r in done if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in done)
    return {
        "clients": clients,
        "requests": len(prompts),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "no_text": len(done) - len(ttfts),
        "completion_tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_ms": round(1e3 * _pct(ttfts, 0.5), 1),
        "ttft_p90_ms": round(1e3 * _pct(ttfts, 0.9), 1),
        "texts": [r["text"] if r and "error" not in r else None for r in results],
    }


def rotated(items: tuple | list, r: int) -> list:
    return list(items[r % len(items) :]) + list(items[: r % len(items)])


def _summarise(rounds: list[dict], key_of: Callable[[dict], str], value: str, higher_better: bool = True) -> dict:
    by: dict[str, list[dict]] = {}
    for row in rounds:
        by.setdefault(key_of(row), []).append(row)
    out = {}
    for k, rows in by.items():
        vals = [r[value] for r in rows]
        out[k] = {"median": round(statistics.median(vals), 2), "best": max(vals) if higher_better else min(vals)}
    return out


def generation(server_cls, free_port, folder: Path, texts: list[str], levels, requests: int, max_tokens: int,
               rounds: int, extra: list[str]) -> dict:  # fmt: skip
    """The generation level; ``server_cls``/``free_port``: serve_load.py's ServerProcess and free_port."""
    port = free_port()
    cmd = [sys.executable, "-m", "onnxpipe._cli", "serve", str(folder), "--port", str(port), *extra]
    server = server_cls(cmd, port)
    prompts = chat_prompts(texts, requests)
    rows = []
    try:
        info = json.loads(server.get("/info")[1])
        asyncio.run(chat_level(port, prompts[:2], 2, max_tokens))  # warm-up: prefill, decode and the batch merge
        for r in range(rounds):
            for clients in rotated(tuple(levels), r):
                row = asyncio.run(chat_level(port, prompts, clients, max_tokens))
                row["round"] = r
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "texts"}), flush=True)
    finally:
        server.stop()
    # Greedy decoding: every level must give the one-at-a-time level's text for each request.
    base = [row["texts"] for row in rows if row["clients"] == min(levels)][0]
    mismatches = sum(t is not None and b is not None and t != b for row in rows for t, b in zip(row["texts"], base))
    for row in rows:
        del row["texts"]
    tps = _summarise(rows, lambda x: str(x["clients"]), "tokens_per_s")
    ttft50 = _summarise(rows, lambda x: str(x["clients"]), "ttft_p50_ms", higher_better=False)
    ttft90 = _summarise(rows, lambda x: str(x["clients"]), "ttft_p90_ms", higher_better=False)
    one = str(min(levels))
    summary = [
        {
            "clients": int(c),
            "tokens_per_s_median": tps[c]["median"],
            "tokens_per_s_best": tps[c]["best"],
            "ratio_median": round(tps[c]["median"] / tps[one]["median"], 2),
            "ratio_best": round(tps[c]["best"] / tps[one]["best"], 2),
            "ttft_p50_ms_median": ttft50[c]["median"],
            "ttft_p90_ms_median": ttft90[c]["median"],
            "errors": sum(r["errors"] for r in rows if str(r["clients"]) == c),
        }
        for c in sorted(tps, key=int)
    ]
    return {"folder": str(folder), "info": info, "rounds": rows, "summary": summary, "text_mismatches": mismatches}


def generation_markdown(report: dict) -> str:
    g, cfg = report["generation"], report["config"]
    lines = [
        "# onnxpipe serve: generation load",
        "",
        *_header(report),
        f"Decoder: `{g['folder']}` (bench/generate.py's `{cfg['model']}` config, random weights: timing only), "
        f"served as {_served(g['info'])}. {cfg['requests']} chat requests (`/v1/chat/completions`, greedy, "
        f"`max_tokens` {cfg['max_tokens']}, streamed) per level; 1 client = the same requests one at a time. "
        f"{cfg['rounds']} rounds, levels rotated; median and best round.",
        "",
        "| clients | tokens/s median | tokens/s best | x 1 client (median) | x 1 client (best) | TTFT p50 ms | "
        "TTFT p90 ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in g["summary"]:
        lines.append(
            f"| {s['clients']} | {s['tokens_per_s_median']} | {s['tokens_per_s_best']} | {s['ratio_median']} | "
            f"{s['ratio_best']} | {s['ttft_p50_ms_median']} | {s['ttft_p90_ms_median']} | {s['errors']} |"
        )
    top = g["summary"][-1]
    errors = sum(s["errors"] for s in g["summary"])
    lines += [
        "",
        f"Greedy texts that differ from the one-at-a-time level's: {g['text_mismatches']}.",
        "",
        "| target | figure | met |",
        "| --- | --- | --- |",
        f"| {top['clients']} clients: >= 2.5x the tokens/s of one at a time, 0 errors | {top['ratio_median']}x "
        f"median ({top['ratio_best']}x best), {errors} errors | "
        f"{'yes' if top['ratio_median'] >= 2.5 and errors == 0 else 'no'} |",
    ]
    return "\n".join(lines + _notes(report)) + "\n"


def _notes(report: dict) -> list[str]:
    """``--note`` paragraphs (and notes written into the JSON after a run), each after a blank line."""
    return [line for note in report.get("notes", []) for line in ("", note)]


def _served(info: dict) -> str:
    models = info.get("models") or [info]
    return ", ".join(f"{m.get('name', '?')} ({m.get('precision', '?')})" for m in models)


def _header(report: dict) -> list[str]:
    m = report["machine"]
    return [
        f"Command: `{report['command']}`  ",
        f"Commit: {report['commit']}  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, SIMD {report['simd']}, Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}  ",
        f"Load average (1 min): {report['loadavg']['start']} at start, {report['loadavg']['end']} at the end. The "
        "machine is shared with other jobs: a start above the core count means they shared the cores, and then "
        "absolute rates do not compare and ratios (measured in the same run, rotated) only roughly: the scheduler "
        "shares the cores per thread, between processes with different thread counts.",
        "",
    ]


def simd() -> str:
    flags = set(re.findall(r"\b(avx512_vnni|avx2)\b", Path("/proc/cpuinfo").read_text()))
    return ",".join(sorted(flags)) or "neither avx2 nor avx512_vnni"


# ---- wrk ----------------------------------------------------------------------------------------------------
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""


def wrk_once(port: int, script: Path, connections: int, seconds: float) -> dict:
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), f"http://127.0.0.1:{port}/predict"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    out = proc.stdout
    if proc.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"requests": total, "requests_per_s": rate, "errors": errors, "non_2xx": int(non2xx.group(1)) if non2xx
            else 0, "socket_errors": sum(map(int, sock.groups())) if sock else 0}  # fmt: skip


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def offline_rates(pipe, text: str, copies: int) -> dict:
    batch = [text] * copies
    t0, c0 = time.perf_counter(), _cpu_s()
    pipe(batch)
    t_list, c_list = time.perf_counter() - t0, _cpu_s() - c0
    t0 = time.perf_counter()
    for _ in range(copies):
        pipe(text)
    t_one = time.perf_counter() - t0
    return {"list_per_s": round(copies / t_list, 1), "single_per_s": round(copies / t_one, 1),
            "list_cpu_us_per_item": round(1e6 * c_list / copies, 1)}  # fmt: skip


def wrk_level(server_cls, free_port, model: Path, text: str, connections, seconds: float, rounds: int,
              copies: int, extra: list[str], runtimes: dict[str, Path] | None = None) -> dict:  # fmt: skip
    """``runtimes``: label -> runtime folder, one server each (None: this checkout's, unlabelled)."""
    from onnxpipe import pipeline

    pipe = pipeline("text-classification", model=model)
    pipe([text] * 32)
    servers = {}
    try:
        for label, folder in (runtimes or {"": ROOT / "runtime"}).items():
            port = free_port()
            cmd = [sys.executable, "-m", "onnxpipe._cli", "serve", str(model), "--port", str(port),
                   "--max-concurrent-requests", "512", *extra]  # fmt: skip
            servers[label] = (server_cls(cmd, port, runtime=folder), port)
        rows = _wrk_rounds(pipe, servers, text, connections, seconds, rounds, copies)
    finally:
        for server, _ in servers.values():
            server.stop()
    off = [r for r in rows if r["kind"] == "offline"]
    summary = [_wrk_summary(rows, off, label, c) for label in servers for c in connections]
    list_med = statistics.median(r["list_per_s"] for r in off)
    single_med = statistics.median(r["single_per_s"] for r in off)
    list_cpu_med = statistics.median(r["list_cpu_us_per_item"] for r in off)
    return {
        "text": text,
        "rounds": rows,
        "offline": {
            "list_per_s_median": list_med,
            "single_per_s_median": single_med,
            "copies": copies,
            "list_cpu_us_per_item_median": list_cpu_med,
        },  # fmt: skip
        "summary": summary,
    }


def _wrk_rounds(pipe, servers: dict, text: str, connections, seconds: float, rounds: int, copies: int) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA.format(body=json.dumps(json.dumps({"inputs": text}))))
        for _, port in servers.values():
            wrk_once(port, script, max(connections), 2.0)  # warm-up
        kinds = [("", "offline"), *((label, f"wrk-{c}") for label in servers for c in connections)]
        for r in range(rounds):
            for label, kind in rotated(kinds, r):
                if kind == "offline":
                    row = {"kind": kind, **offline_rates(pipe, text, copies)}
                else:
                    server, port = servers[label]
                    cpu0 = server.cpu_seconds()
                    row = {"kind": kind, "connections": int(kind[4:]), **wrk_once(port, script, int(kind[4:]), seconds)}
                    if label:
                        row["runtime"] = label
                    # CPU time per request: on a shared machine the wall-clock rates of the server and of
                    # offline pipe(list) are skewed by the scheduler (the server has more threads to share
                    # cores with other jobs), CPU per request much less.
                    row["server_cpu_us_per_request"] = round(
                        1e6 * (server.cpu_seconds() - cpu0) / max(row["requests"], 1), 1
                    )
                row["round"] = r
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _wrk_summary(rows: list, off: list, label: str, c: int) -> dict:
    """One runtime's figures at ``c`` connections, the ratios against the offline rounds of the same run."""
    list_med = statistics.median(r["list_per_s"] for r in off)
    single_med = statistics.median(r["single_per_s"] for r in off)
    these = [r for r in rows if r.get("connections") == c and r.get("runtime", "") == label]
    rates = [r["requests_per_s"] for r in these]
    # best round's ratio: the round's own offline figure, measured beside it
    per_round = [r["requests_per_s"] / next(o["list_per_s"] for o in off if o["round"] == r["round"]) for r in these]
    return {
        **({"runtime": label} if label else {}),
        "connections": c,
        "requests_per_s_median": round(statistics.median(rates), 1),
        "requests_per_s_best": max(rates),
        "of_list_median": round(statistics.median(rates) / list_med, 3),
        "of_list_best_round": round(max(per_round), 3),
        "of_list_worst_round": round(min(per_round), 3),
        "of_single_median": round(statistics.median(rates) / single_med, 3),
        "errors": sum(r["errors"] for r in these),
        "requests": sum(r["requests"] for r in these),
        "server_cpu_us_per_request_median": statistics.median(r["server_cpu_us_per_request"] for r in these),
    }


def wrk_markdown(report: dict) -> str:
    w, cfg = report["wrk"], report["config"]
    off = w["offline"]
    labelled = "runtime" in w["summary"][0]
    lines = [
        "# onnxpipe serve: wrk against offline pipe",
        "",
        *_header(report),
        f'`wrk -t1 -cN -d{cfg["seconds"]:g}s` with a Lua script POSTing `{{"inputs": ...}}` of one SST-2 '
        f"sentence to `/predict` of `{cfg['model']}` (`onnxpipe serve` {' '.join(cfg['serve_args']) or 'defaults'})"
        f"; offline in the bench process: `pipe(list)` of the sentence x {off['copies']} and `pipe(text)` "
        f"{off['copies']} times. {cfg['rounds']} rounds, offline and each connection count rotated; medians, "
        "and the best round's server/offline ratio against that round's own offline figure.",
        "",
        f"Offline (median): pipe(list) {off['list_per_s_median']}/s, pipe(text) one by one "
        f"{off['single_per_s_median']}/s; pipe(list) CPU {off.get('list_cpu_us_per_item_median', '?')} us per item.",
        "",
        f"| {'runtime | ' if labelled else ''}connections | req/s median | req/s best | / pipe(list) median "
        "| / pipe(list) best round "
        "| / pipe(list) worst round | / pipe(text) median | server CPU us / request | pipe(list) CPU / server CPU "
        "| requests | errors (non-2xx + socket) |",
        f"| {'--- | ' if labelled else ''}---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in w["summary"]:
        cpu = s.get("server_cpu_us_per_request_median")
        share = f"{100 * off['list_cpu_us_per_item_median'] / cpu:.0f} %" if cpu else "?"
        lines.append(
            f"| {s['runtime'] + ' | ' if labelled else ''}"
            f"{s['connections']} | {s['requests_per_s_median']} | {s['requests_per_s_best']} | "
            f"{100 * s['of_list_median']:.0f} % | {100 * s['of_list_best_round']:.0f} % | "
            f"{100 * s['of_list_worst_round']:.0f} % | {100 * s['of_single_median']:.0f} % | {cpu or '?'} | "
            f"{share} | {s['requests']} | {s['errors']} |"
        )
    tops = [s for s in w["summary"] if s["connections"] == w["summary"][-1]["connections"]]
    # Past the core count at the start, other jobs shared the cores: the scheduler shares them per thread, the
    # server has more threads than offline pipe(list), and the wall-clock ratio says more about that than about
    # the server. Such a run gives no verdict.
    quiet = report["loadavg"]["start"] <= report["machine"]["cores"]
    lines += ["", "| target | figure | met |", "| --- | --- | --- |"]
    for top in tops:
        met = top["of_list_median"] >= 0.8 and top["errors"] == 0
        verdict = ("yes" if met else "no") if quiet else "not judged: load above the core count"
        lines.append(
            f"| {top['connections']} connections: >= 80 % of offline pipe(list), 0 errors"
            f"{' (' + top['runtime'] + ')' if labelled else ''} | "
            f"{100 * top['of_list_median']:.0f} % median ({100 * top['of_list_best_round']:.0f} % best round), "
            f"{top['errors']} errors | {verdict} |"
        )
    return "\n".join(lines + _notes(report)) + "\n"
