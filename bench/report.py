"""Turn aggregated rows into summary.json (targets and ratios), results.md and PNG charts (in charts/,
replaced on every run).

The targets (targets() below: speed ratios against the other engines, and accuracy gates) are computed from
ratios measured in the same run. Engine (b) is the faster of Optimum on onnxpipe's own file and Optimum's own
recipe, per workload.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from provenance import markdown as provenance_lines

ONNXPIPE = "onnxpipe-int8"
TORCH_ENV = ["torch", "transformers"]
RUNTIME_ENV = ["onnxruntime", "tokenizers", "numpy"]


# -- installed size ----------------------------------------------------------------------------------------
def _closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _dist_bytes(name: str) -> int:
    dist = metadata.distribution(name)
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def env_sizes() -> dict:
    """Installed bytes of each environment's package closure, read from this venv's installed files (pip and
    setuptools, the same in both, are left out); the onnxpipe runtime's own sources are added to its side."""
    out = {}
    for label, roots in (("runtime_only", RUNTIME_ENV), ("transformers_torch", TORCH_ENV)):
        names = _closure(roots)
        out[label] = {"packages": sorted(names), "mb": round(sum(_dist_bytes(n) for n in names) / 1e6, 1)}
    src = Path(__file__).resolve().parents[1] / "runtime" / "onnxpipe"
    out["runtime_only"]["mb"] = round(
        out["runtime_only"]["mb"] + sum(p.stat().st_size for p in src.rglob("*.py")) / 1e6, 1
    )
    return out


# -- targets -----------------------------------------------------------------------------------------------
def _index(rows):
    return {(r["task"], r["engine"], r["workload"]): r for r in rows if r.get("status") == "ok"}


def _best_b(idx, task, workload, key, lower_is_better):
    cands = [
        (r[key], e)
        for (t, e, w), r in idx.items()
        if t == task and w == workload and r["kind"] == "b" and r.get(key) is not None
    ]
    if not cands:
        return None, None
    return (min if lower_is_better else max)(cands)


A, E = "transformers-fp32", ONNXPIPE
BEST_B = "(b)"  # in a target's side: the best Optimum recipe measured for that workload
UNITS = {"p50_ms": "ms", "throughput_sps": "s/s", "cold_start_s": "s", "peak_rss_mb": "MB", "peak_rss_sst2_mb": "MB"}
LONG = ("syn128", "syn256", "syn512", "syn128-b8", "syn256-b8", "syn512-b8")
# (target, goal, numerator, denominator): ratio = numerator / denominator >= goal, or <= goal where the target says
# so; each side is (task, engine, workload, key). First the targets against transformers and Optimum's recipes,
# then those for batch-invariant int8 (each input run alone): batch 1 at 1.5x Optimum on the very same int8 file,
# and long inputs (where attention's share grows) no slower than Optimum's best recipe.
TARGETS = [
    ("seed1 p50: (a)/onnxpipe >= 8", 8, ("cls", A, "seed1", "p50_ms"), ("cls", E, "seed1", "p50_ms")),
    ("seed1 p50: (b)/onnxpipe >= 1.1", 1.1, ("cls", BEST_B, "seed1", "p50_ms"), ("cls", E, "seed1", "p50_ms")),
    (
        "seed1 p50: (b=optimum-same-int8)/onnxpipe >= 1.5",
        1.5,
        ("cls", "optimum-same-int8", "seed1", "p50_ms"),
        ("cls", E, "seed1", "p50_ms"),
    ),
    # (d) twice: onnxruntime's default options, and onnxpipe's own session run bare (its overhead exactly)
    *(
        (f"{wl} p50: onnxpipe/(d={d}) <= {goal}", goal, ("cls", E, wl, "p50_ms"), ("cls", d, wl, "p50_ms"))
        for d in ("ort-int8-onnxpipe-opts", "ort-int8")
        for wl, goal in (("seed1", 1.15), ("sst2-b32", 1.05))
    ),
    *(
        row
        for wl in ("sst2-b32", "sst2-stream")
        for row in (
            (
                f"{wl} throughput: onnxpipe/(a) >= 4",
                4,
                ("cls", E, wl, "throughput_sps"),
                ("cls", A, wl, "throughput_sps"),
            ),
            (
                f"{wl} throughput: onnxpipe/(b) >= 1.5",
                1.5,
                ("cls", E, wl, "throughput_sps"),
                ("cls", BEST_B, wl, "throughput_sps"),
            ),
        )
    ),
    *(
        (
            f"fe {wl} {p} throughput: onnxpipe/fastembed >= 1",
            1.0,
            ("fe", f"onnxpipe-{p}", wl, "throughput_sps"),
            ("fe", f"fastembed-{p}", wl, "throughput_sps"),
        )
        for p in ("int8", "fp32")
        for wl in ("sst2-b32", "sst2-stream")
    ),
    *((f"{wl} p50: (b)/onnxpipe >= 1", 1.0, ("cls", BEST_B, wl, "p50_ms"), ("cls", E, wl, "p50_ms")) for wl in LONG),
    ("cold start: (a)/onnxpipe >= 8", 8, ("cls", A, "process", "cold_start_s"), ("cls", E, "process", "cold_start_s")),
    (
        "peak RSS over the SST-2 workloads: (a)/onnxpipe >= 3",
        3,
        ("cls", A, "process", "peak_rss_sst2_mb"),
        ("cls", E, "process", "peak_rss_sst2_mb"),
    ),
]


def _ratio_row(name, goal, num, num_label, den, den_label, higher=True) -> dict:
    if num is None or den is None or den == 0:
        note = f"not measured ({num_label or '?'} / {den_label or '?'} missing)"
        return {"target": name, "ratio": None, "goal": goal, "met": None, "note": note}
    ratio = num / den
    return {
        "target": name,
        "ratio": round(ratio, 3),
        "goal": goal,
        "met": ratio >= goal if higher else ratio <= goal,
        "detail": f"{num_label} {num:.4g} / {den_label} {den:.4g}",
    }


def targets(rows, sizes) -> list[dict]:
    idx = _index(rows)

    def side(task, engine, workload, key):
        """(value, label) of one side of a target."""
        if engine == BEST_B:
            value, engine = _best_b(idx, task, workload, key, lower_is_better=key == "p50_ms")
            engine = f"b={engine}"
        else:
            r = idx.get((task, engine, workload))
            value = None if r is None else r.get(key)
        short = {A: "a", E: "onnxpipe"}.get(engine, engine)
        return value, f"{short} {UNITS[key]}"

    out = [
        _ratio_row(name, goal, *side(*num), *side(*den), higher="<=" not in name) for name, goal, num, den in TARGETS
    ]
    out.append(
        _ratio_row(
            "install size: torch env/runtime env >= 5",
            5,
            sizes["transformers_torch"]["mb"],
            "torch env MB",
            sizes["runtime_only"]["mb"],
            "runtime env MB",
        )
    )

    def get(task, engine, workload, key):
        r = idx.get((task, engine, workload))
        return None if r is None else r.get(key)

    # accuracy
    acc8, acc32 = get("cls", E, "sst2-b32", "accuracy"), get("cls", "onnxpipe-fp32", "sst2-b32", "accuracy")
    if acc8 is not None and acc32 is not None:
        out.append(
            {
                "target": "int8 accuracy >= fp32 - 1 point",
                "ratio": round((acc8 - acc32) * 100, 2),
                "goal": -1.0,
                "met": acc8 >= acc32 - 0.01,
                "detail": f"int8 {acc8:.4f}, fp32 {acc32:.4f} (difference in points)",
            }
        )
        l8, l32 = idx[("cls", E, "sst2-b32")]["labels"], idx[("cls", "onnxpipe-fp32", "sst2-b32")]["labels"]
        agree = sum(x == y for x, y in zip(l8, l32)) / len(l8)
        out.append(
            {
                "target": "int8 labels == fp32 labels on >= 98%",
                "ratio": round(agree, 4),
                "goal": 0.98,
                "met": agree >= 0.98,
                "detail": f"{sum(x == y for x, y in zip(l8, l32))}/{len(l8)} sentences",
            }
        )
    else:
        out.append(
            {
                "target": "int8 accuracy / agreement",
                "ratio": None,
                "goal": None,
                "met": None,
                "note": "not measured (onnxpipe int8 or fp32 missing)",
            }
        )
    return out


# -- markdown ----------------------------------------------------------------------------------------------
def _fmt(x, digits=3):
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:.0f}"


def markdown(rows, cfg, summary) -> str:
    lines = [
        f"# onnxpipe benchmark results{' (QUICK run: not representative)' if summary['quick'] else ''}",
        "",
        *provenance_lines(summary["provenance"]),
        "",
        f"Rounds: {cfg['rounds']} (each engine in its own process per round, order rotated; medians). "
        f"Timing per workload: {json.dumps(cfg['timing'])}. Wall time {summary['elapsed_s']:.0f} s.",
        "",
        "## Targets",
        "",
        "| target | ratio | goal | met | detail |",
        "|---|---|---|---|---|",
    ]
    for t in summary["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(
            f"| {t['target']} | {_fmt(t['ratio'])} | {t['goal']} | {met} | {t.get('detail') or t.get('note', '')} |"
        )
    for task, title in (("cls", "Sentiment (minilm-sst2)"), ("fe", "Sentence embeddings (all-MiniLM-L6-v2)")):
        mine = [r for r in rows if r["task"] == task]
        if not mine:
            continue
        wls = list(dict.fromkeys(r["workload"] for r in mine if r["workload"] != "process"))
        engines = list(dict.fromkeys(r["engine"] for r in mine))
        idx = {(r["engine"], r["workload"]): r for r in mine}
        lines += [
            "",
            f"## {title}",
            "",
            "p50 latency per request in ms (p90 / p99 in raw/results.jsonl, written by each run); "
            "sentences/s for SST-2 workloads.",
            "",
            "| engine | " + " | ".join(wls) + " |",
            "|---" * (len(wls) + 1) + "|",
        ]
        for e in engines:
            proc = idx.get((e, "process"), {})
            if proc.get("status", "").startswith("unavailable"):
                lines.append(f"| {e} ({proc['kind']}) | " + proc["status"] + " |" + " |" * (len(wls) - 1))
                continue
            cells = []
            for w in wls:
                r = idx.get((e, w))
                if r is None:
                    cells.append("-")
                elif w.startswith("sst2"):
                    cells.append(f"{_fmt(r['p50_ms'])} ms, {_fmt(r['throughput_sps'])}/s")
                else:
                    cells.append(f"{_fmt(r['p50_ms'])}")
            lines.append(f"| {e} ({idx.get((e, 'process'), {}).get('kind', '?')}) | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| engine | cold start s | peak RSS MB (SST-2 / all) | RSS after 1st MB | SST-2 acc (b32) | parity "
            "| provider |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in engines:
            p = idx.get((e, "process"), {})
            if p.get("status") != "ok":
                continue
            acc = idx.get((e, "sst2-b32"), {}).get("accuracy")
            lines.append(
                f"| {e} | {_fmt(p['cold_start_s'])} | {_fmt(p.get('peak_rss_sst2_mb'))} / {_fmt(p['peak_rss_mb'])} | "
                f"{_fmt(p['rss_after_first_mb'])} | {'-' if acc is None or task == 'fe' else f'{acc:.4f}'} | "
                f"{p.get('parity') or '-'} | {p['provider']} |"
            )
    s = summary["sizes"]
    lines += [
        "",
        "## Installed size",
        "",
        f"- runtime only (onnxpipe + {', '.join(RUNTIME_ENV)} and their dependencies): "
        f"**{s['runtime_only']['mb']} MB** ({len(s['runtime_only']['packages'])} packages)",
        f"- transformers + torch (CPU): **{s['transformers_torch']['mb']} MB** "
        f"({len(s['transformers_torch']['packages'])} packages)",
        "",
    ]
    if summary.get("charts_note"):
        lines.append(summary["charts_note"])
    return "\n".join(lines) + "\n"


# -- charts ------------------------------------------------------------------------------------------------
def charts(rows, out: Path) -> list[str]:
    """Draw into ``out`` (one folder), after deleting the charts an earlier run left there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    written = []
    for task in ("cls", "fe"):
        ok = [r for r in rows if r["task"] == task and r.get("status") == "ok" and r["workload"] != "process"]
        if not ok:
            continue
        engines = list(dict.fromkeys(r["engine"] for r in ok))
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
        for ax in (ax1, ax2):  # more engines than the default 10 colours
            ax.set_prop_cycle(color=plt.cm.tab20.colors[: len(engines)])
        for e in engines:
            pts = sorted(
                (r["batch_size"], r["p50_ms"], r["throughput_sps"])
                for r in ok
                if r["engine"] == e and r["workload"].startswith("sst2-b")
            )
            if pts:
                ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=e)
                ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=e)
        for ax, yl in ((ax1, "p50 latency per request (ms)"), (ax2, "throughput (sentences/s)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("batch size (SST-2 dev requests)")
            ax.set_ylabel(yl)
            ax.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=7)
        fig.suptitle(f"{task}: latency and throughput by batch size")
        fig.tight_layout()
        path = out / f"latency_by_batch_{task}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(f"{out.name}/{path.name}")

        seed = [r for r in ok if r["workload"] == "seed1"]
        if seed:
            fig, ax = plt.subplots(figsize=(10, 4.5))
            xs = range(len(seed))
            for j, (k, c) in enumerate((("p50_ms", "C0"), ("p90_ms", "C1"), ("p99_ms", "C3"))):
                ax.bar([x + (j - 1) * 0.27 for x in xs], [r[k] for r in seed], width=0.27, label=k[:3], color=c)
            ax.set_xticks(list(xs))
            ax.set_xticklabels([r["engine"] for r in seed], rotation=30, ha="right", fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("ms")
            ax.set_title(f"{task}: latency distribution, seed sentence, batch 1")
            ax.legend()
            ax.grid(True, axis="y", which="both", alpha=0.3)
            fig.tight_layout()
            path = out / f"latency_distribution_{task}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(f"{out.name}/{path.name}")
    return written


def report(rows, prov: dict, cfg, out: Path, paths: dict[str, str], elapsed: float, quick: bool) -> dict:
    sizes = env_sizes()
    summary = {
        "provenance": prov,
        "machine": prov["machine"],
        "config": cfg,
        "paths": paths,
        "quick": quick,
        "elapsed_s": elapsed,
        "sizes": sizes,
        "targets": targets(rows, sizes),
        "unavailable": {
            f"{r['task']}/{r['engine']}": r["status"]
            for r in rows
            if r["workload"] == "process" and r["status"] != "ok"
        },
    }
    try:
        summary["charts"] = charts(rows, out / "charts")
    except ImportError as e:
        summary["charts"] = []
        summary["charts_note"] = f"Charts not drawn: {e} (matplotlib lives in the bench venv only)."
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out / "results.md").write_text(markdown(rows, cfg, summary))
    return summary
