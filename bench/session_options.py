"""Which onnxruntime session options make onnxpipe's graphs fastest here: intra-op threads, spinning, memory
arena, memory pattern, graph optimization level. Bare session.run on pre-tokenized inputs, each option set in
its own process (a spinning pool would disturb the next), option sets alternated over rounds, medians.

    .venv-bench/bin/python bench/session_options.py [--model models/minilm-sst2] [--precision int8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance, rel  # noqa: E402

# ---- configuration ---------------------------------------------------------------------------------------
# onnxpipe's settings; "threads": None is its default, one per usable core (the runtime's default_threads)
BASE = {
    "threads": None,
    "spinning": 1,
    "arena": 1,
    "mem_pattern": 1,
    "opt": "extended",
    "force_stop": 0,
    "spin_us": None,
}
VARIANTS = {
    "onnxpipe (threads = cores, spin, arena, pattern, extended)": {},
    "1 thread": {"threads": 1},
    "no spinning": {"spinning": 0},
    "spinning stopped when run() returns": {"force_stop": 1},
    "spinning at most 50 us": {"spin_us": 50},
    "no arena": {"arena": 0},
    "no memory pattern": {"mem_pattern": 0},
    "opt all": {"opt": "all"},
    "opt basic": {"opt": "basic"},
    "opt disabled": {"opt": "disabled"},
}
SEED_CALLS = 300  # timed batch-1 calls per child (defaults of --seed-calls / --sst2-sentences)
SST2_SENTENCES = 256  # the first 256 dev sentences in batches of 32: short children, so more rounds fit
# ----------------------------------------------------------------------------------------------------------


def child(model: str, precision: str, opts: dict, seed_calls: int, sst2_sentences: int) -> dict:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from layout import VARIANT_FILES
    from workloads import SEED, read_sst2

    so = ort.SessionOptions()
    from onnxpipe._session import default_threads

    so.intra_op_num_threads = opts["threads"] or default_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", str(opts["spinning"]))
    so.add_session_config_entry("session.force_spinning_stop", str(opts["force_stop"]))
    if opts["spin_us"] is not None:
        so.add_session_config_entry("session.intra_op.spin_duration_us", str(opts["spin_us"]))
    so.enable_cpu_mem_arena = bool(opts["arena"])
    so.enable_mem_pattern = bool(opts["mem_pattern"])
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opts["opt"]]
    t = time.perf_counter()
    sess = ort.InferenceSession(
        str(Path(model) / VARIANT_FILES[precision]), sess_options=so, providers=["CPUExecutionProvider"]
    )
    load = time.perf_counter() - t
    names = [i.name for i in sess.get_inputs()]
    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.enable_padding()

    def feeds(texts):
        e = tok.encode_batch(texts)
        full = {
            "input_ids": np.array([x.ids for x in e], np.int64),
            "attention_mask": np.array([x.attention_mask for x in e], np.int64),
            "token_type_ids": np.array([x.type_ids for x in e], np.int64),
        }
        return {n: full[n] for n in names}

    one = feeds([SEED])
    for _ in range(20):
        sess.run(["logits"], one)
    lat = []
    for _ in range(seed_calls):
        t = time.perf_counter()
        sess.run(["logits"], one)
        lat.append(time.perf_counter() - t)
    texts, _ = read_sst2(limit=sst2_sentences)
    batches = [feeds(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    for b in batches[:2]:
        sess.run(["logits"], b)
    t = time.perf_counter()
    for b in batches:
        sess.run(["logits"], b)
    sps = len(texts) / (time.perf_counter() - t)
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {
        "seed1_p50_ms": statistics.median(lat) * 1e3,
        "sst2_b32_sps": sps,
        "load_s": load,
        "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=str(HERE.parent / "models" / "minilm-sst2"), help="model folder (default models/minilm-sst2)"
    )
    ap.add_argument("--precision", default="int8", help="its precision to load (default int8)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, option sets rotated (default 3)")
    ap.add_argument(
        "--seed-calls", type=int, default=SEED_CALLS, help=f"timed batch-1 calls per process (default {SEED_CALLS})"
    )
    ap.add_argument(
        "--sst2-sentences",
        type=int,
        default=SST2_SENTENCES,
        help=f"SST-2 dev sentences timed in batches of 32 (default {SST2_SENTENCES})",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=HERE / "results" / "session_options.json",
        help="JSON out (default bench/results/session_options.json)",
    )
    ap.add_argument("--only", help="comma-separated option-set names (default: all; the first, onnxpipe's, always)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # the parent's per-process call; options as JSON
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.model, a.precision, json.loads(a.child), a.seed_calls, a.sst2_sentences)))
        return 0
    prov = provenance(__file__, argv)
    chosen = [k for k in VARIANTS if not a.only or k in a.only.split(",") or k == next(iter(VARIANTS))]
    got: dict[str, list[dict]] = {k: [] for k in chosen}
    for rnd in range(a.rounds):
        names = list(chosen)
        names = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in names:
            opts = {**BASE, **VARIANTS[name]}
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--model",
                    a.model,
                    "--precision",
                    a.precision,
                    "--seed-calls",
                    str(a.seed_calls),
                    "--sst2-sentences",
                    str(a.sst2_sentences),
                    "--child",
                    json.dumps(opts),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            got[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for name, rs in got.items():
        rows.append(
            {"options": name, **{k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}, "rounds": len(rs)}
        )
    base = rows[0]
    print(
        f"{'options':52s} {'seed1 p50 ms':>12s} {'vs base':>8s} {'sst2-b32 /s':>12s} {'vs base':>8s} {'load s':>7s} "
        f"{'peak MB':>8s}"
    )
    for r in rows:
        print(
            f"{r['options']:52s} {r['seed1_p50_ms']:12.3f} {r['seed1_p50_ms'] / base['seed1_p50_ms']:8.2f} "
            f"{r['sst2_b32_sps']:12.1f} {r['sst2_b32_sps'] / base['sst2_b32_sps']:8.2f} {r['load_s']:7.3f} "
            f"{r['peak_rss_mb']:8.1f}"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(
        json.dumps(
            {
                "provenance": prov,
                "machine": prov["machine"],
                "model": rel(a.model),
                "precision": a.precision,
                "seed_calls": a.seed_calls,
                "sst2_sentences": a.sst2_sentences,
                "rows": rows,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
