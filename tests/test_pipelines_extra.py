"""fill-mask, token-classification, question-answering and zero-shot-classification against transformers' own
pipelines, on tiny random checkpoints of six architectures exported once per session (int8 + fp32).

Parity (fp32): same keys, labels, words, tokens and spans, scores within 1e-4. INT8: agreement with fp32 on
labels / tokens / spans is measured and printed; on random tiny models only the output's sanity is asserted.
"""

from __future__ import annotations

import io
import json
import sys
from collections import Counter

import numpy as np
import pytest

import onnxpipe
from onnxpipe import errors
from onnxpipe._cli import main

ARCHS = ["bert", "distilbert", "roberta", "albert", "electra", "deberta-v2"]
TASKS = ["fill-mask", "token-classification", "question-answering", "zero-shot-classification"]
ATOL = 1e-4

TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is a company based in New York City!",  # multi-word entities, punctuation
    "naïve café résumé — Zürich, São Paulo, Kraków",  # accents: offsets past normalisation
    "unbelievably, the cookie-cutter movie's plot (2026) was... ok?",  # sub-words, apostrophes, brackets
    "Great phone 👍👍 but the battery 🔋 dies fast 😞",  # emoji: <unk> and byte-level pieces
    "東京は日本の首都です。",
    "",
]
CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
    "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
)
LONG_CONTEXT = CONTEXT * 6  # ~240 tokens: several windows at max_seq_len 48, two at the default (up to 128)
QUESTIONS = ["Who designed the tower?", "When was it built?", "Where is it?"]
LABELS = ["politics", "sports", "science fiction", "cooking"]

# task -> (case name, positional args, keyword args); "{mask}" becomes the tokenizer's mask token.
CASES: dict[str, list[tuple[str, tuple, dict]]] = {
    "fill-mask": [
        ("single", ("The film was {mask}.",), {}),
        (
            "batch-top3",
            (["The film was {mask}.", "Hello {mask}, hello again!", "naïve café {mask} — Zürich"],),
            {"top_k": 3},
        ),
        ("two-masks", ("{mask} {mask} and I've been waiting.",), {"top_k": 2}),
        ("targets", ("Hello {mask}, hello again!",), {"targets": ["good", "bad", "zzzq"]}),  # zzzq: not a token
        ("list-of-one", (["The {mask} was slow."],), {"top_k": 2}),
    ],
    "token-classification": [
        *[
            (f"aggregation-{s}", (TEXTS,), {"aggregation_strategy": s})
            for s in ("none", "simple", "first", "average", "max")
        ],
        ("ignore-absent-label", (TEXTS[:4],), {"aggregation_strategy": "simple", "ignore_labels": ["MISC", "NOPE"]}),
        ("ignore-nothing", (TEXTS[1],), {"ignore_labels": []}),
        ("stride-windows", (" ".join(TEXTS[:2] * 12),), {"aggregation_strategy": "first", "stride": 16}),
    ],
    "question-answering": [
        ("single", (), {"question": QUESTIONS[0], "context": CONTEXT}),
        ("top3", (), {"question": QUESTIONS[1], "context": CONTEXT, "top_k": 3}),
        ("questions-one-context", (), {"question": QUESTIONS, "context": CONTEXT}),
        ("dict-list", ([{"question": q, "context": CONTEXT} for q in QUESTIONS],), {}),
        (
            "unanswerable",
            (),
            {
                "question": "What colour is the sky on Mars?",
                "context": CONTEXT,
                "handle_impossible_answer": True,
                "top_k": 2,
            },
        ),
        (
            "no-word-alignment",
            (),
            {"question": QUESTIONS[0], "context": CONTEXT, "align_to_words": False, "max_answer_len": 3},
        ),
        ("long-context-default", (), {"question": QUESTIONS[0], "context": LONG_CONTEXT}),
        (
            "long-context-windows",
            (),
            {"question": QUESTIONS[2], "context": LONG_CONTEXT, "max_seq_len": 48, "doc_stride": 16, "top_k": 4},
        ),
        ("tiny-context", (), {"question": QUESTIONS[0], "context": "Paris.", "top_k": 5}),  # zero-score spans
    ],
    "zero-shot-classification": [
        ("batch", (TEXTS[:5],), {"candidate_labels": LABELS}),
        ("single", (TEXTS[0], LABELS), {}),
        ("multi-label", (TEXTS[:3],), {"candidate_labels": LABELS, "multi_label": True}),
        ("one-label", (TEXTS[1],), {"candidate_labels": ["travel"]}),
        ("comma-string-template", (TEXTS[2],), {"candidate_labels": "a, b,c", "hypothesis_template": "Das ist {}."}),
        ("list-of-one", ([TEXTS[3]],), {"candidate_labels": LABELS}),
    ],
}


def first_difference(a, b, path="result"):
    """None when equal (floats within ATOL, other leaves exactly, ints as ints), else where they differ."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(a) != list(b):
            return f"{path}: keys {list(a)} vs {list(b) if isinstance(b, dict) else type(b).__name__}"
        return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, (list, tuple)):
        if not isinstance(b, list) or len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b) if isinstance(b, list) else type(b).__name__}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, (float, np.floating)):
        return None if isinstance(b, float) and abs(float(a) - b) <= ATOL else f"{path}: {a!r} vs {b!r}"
    if isinstance(a, (int, np.integer)):
        return None if type(b) is int and int(a) == b else f"{path}: {a!r} vs {b!r}"
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def _fill(value, mask):
    if isinstance(value, str):
        return value.replace("{mask}", mask)
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, mask) for v in value)
    return value


@pytest.fixture(scope="session")
def pipes(tiny_checkpoint, tiny_export):
    """Factory: (arch, task) -> (transformers pipeline, onnxpipe fp32, onnxpipe int8), built once."""
    cache: dict = {}

    def make(arch: str, task: str):
        if (arch, task) not in cache:
            import transformers

            transformers.logging.set_verbosity_error()
            folder = tiny_export(arch, task, "int8,fp32")
            hf = transformers.pipeline(task, model=str(tiny_checkpoint(arch, task)), device="cpu")
            cache[arch, task] = (hf, *(onnxpipe.pipeline(task, model=folder, precision=p) for p in ("fp32", "int8")))
        return cache[arch, task]

    return make


def _run(pipe, args, kwargs, mask):
    return pipe(*_fill(args, mask), **{k: _fill(v, mask) for k, v in kwargs.items()})


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning")  # transformers' "fallback heuristic" warning
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "task,name,args,kwargs",
    [(t, *c) for t in TASKS for c in CASES[t]],
    ids=[f"{t}-{c[0]}" for t in TASKS for c in CASES[t]],
)
def test_matches_transformers(pipes, arch, task, name, args, kwargs):
    hf, fp32, _ = pipes(arch, task)
    mask = hf.tokenizer.mask_token or ""
    expected, got = _run(hf, args, kwargs, mask), _run(fp32, args, kwargs, mask)
    assert first_difference(expected, got) is None, first_difference(expected, got)


# -- INT8: agreement with fp32, printed; structure and sanity asserted ----------------------------------------
def _dicts(x):
    if isinstance(x, dict):
        yield x
    elif isinstance(x, list):
        for y in x:
            yield from _dicts(y)


def _rows(x):
    """The innermost lists of dicts: options per mask, entities per text."""
    if isinstance(x, list) and all(isinstance(y, dict) for y in x):
        yield x
    elif isinstance(x, list):
        for y in x:
            yield from _rows(y)


def _units(task: str, result) -> list:
    """What int8 must agree on: top-1 token per mask, (label, span) entities, answer spans, top label."""
    if task == "fill-mask":
        return [row[0]["token"] for row in _rows(result)]
    if task == "token-classification":
        return [
            (i, e.get("entity", e.get("entity_group")), e["start"], e["end"])
            for i, row in enumerate(_rows(result))
            for e in row
        ]
    if task == "question-answering":
        return [(d["start"], d["end"]) for d in _dicts(result)]
    return [d["labels"][0] for d in _dicts(result)]


def _agreement(a: list, b: list) -> tuple[int, int]:
    common = sum((Counter(a) & Counter(b)).values())
    return common, max(len(a), len(b))


def _sane(task: str, got, ref) -> None:
    """Same shape of result as fp32 where the task fixes it; the same keys; probabilities where promised."""
    assert type(got) is type(ref)
    if task in ("fill-mask", "zero-shot-classification"):  # fixed counts: options per mask, one dict per text
        assert [len(r) for r in _rows(got)] == [len(r) for r in _rows(ref)]
    keys = {tuple(d) for d in _dicts(ref)}
    assert not keys or {tuple(d) for d in _dicts(got)} <= keys
    for d in _dicts(got):
        scores = d.get("scores", [d.get("score", 0.0)])
        assert all(np.isfinite(x) and x >= 0 for x in scores)
        if task != "question-answering":  # QA adds up the scores of equal answers across windows
            assert all(x <= 1 + 1e-6 for x in scores)


# Lowest int8-vs-fp32 agreement accepted per task, over every architecture's tiny model. Measured (tiny exports
# are deterministic now): fill-mask 95.8 %, token-classification 95.7 %, question-answering 88.0 %, zero-shot
# 93.1 % (AVX2 AMD EPYC with u8 weights); the gates leave room for another CPU's rounding, not for a broken
# recipe (full-range s8 weights saturate on that CPU: 29 %, 61 %, 46 %, 75 %). The default recipe's 7-bit
# weights give every CPU the same integer products (test_int8_reference.py).
AGREEMENT_GATE = {
    "fill-mask": 0.85,
    "token-classification": 0.85,
    "question-answering": 0.75,
    "zero-shot-classification": 0.80,
}


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("task", TASKS)
def test_int8_agreement(pipes, task, capsys):
    per_arch = {}
    for arch in ARCHS:
        hf, fp32, int8 = pipes(arch, task)
        mask = hf.tokenizer.mask_token or ""
        agree = total = 0
        for _, args, kwargs in CASES[task]:
            ref, got = _run(fp32, args, kwargs, mask), _run(int8, args, kwargs, mask)
            _sane(task, got, ref)
            a, t = _agreement(_units(task, got), _units(task, ref))
            agree, total = agree + a, total + t
        per_arch[arch] = (agree, total)
    agree, total = map(sum, zip(*per_arch.values()))
    assert total > 0  # the cases produced something to compare
    with capsys.disabled():
        detail = ", ".join(f"{a} {x}/{t}" for a, (x, t) in per_arch.items())
        print(f"\n[int8 vs fp32] {task}: {agree}/{total} = {agree / total:.1%} agree ({detail})")
    assert agree / total >= AGREEMENT_GATE[task], f"{task}: int8 agrees with fp32 on {agree}/{total} ({detail})"


# -- errors, registry, manifest, CLI ---------------------------------------------------------------------------
def test_registry_and_aliases():
    from onnxpipe._tasks import canonical_task, folder_task

    assert set(TASKS) <= set(onnxpipe.TASKS)
    assert canonical_task("ner") == "token-classification"
    assert folder_task("zero-shot-classification") == "zero-shot-classification"


@pytest.mark.parametrize("task", ["fill-mask", "zero-shot-classification", "question-answering", "ner"])
def test_refuses_folder_of_another_task(task):
    # The embedded sentiment model (no NLI labels) serves none of these; no torch needed.
    with pytest.raises(errors.TaskMismatchError, match="minilm-sst2"):
        onnxpipe.pipeline(task, model="minilm-sst2")


@pytest.mark.torch
@pytest.mark.parametrize(
    "task,call,match",
    [
        ("fill-mask", lambda p: p("no mask here"), "input 0 has no mask token"),
        ("fill-mask", lambda p: p("a {mask}", top_k=0), "top_k=0"),
        ("token-classification", lambda p: p("x", aggregation_strategy="best"), "aggregation_strategy='best'"),
        ("token-classification", lambda p: p("x", stride=4), "stride needs an aggregation_strategy"),
        ("question-answering", lambda p: p({"question": "q"}), "keys 'question' and 'context'"),
        ("question-answering", lambda p: p(question="q", context=""), "must not be empty"),
        ("question-answering", lambda p: p(question="q", context="c", max_seq_len=32, doc_stride=64), "doc_stride"),
        ("zero-shot-classification", lambda p: p("x", candidate_labels=[]), "candidate_labels is empty"),
        (
            "zero-shot-classification",
            lambda p: p("x", candidate_labels=["a"], hypothesis_template="About it."),
            "has no {}",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_bad_arguments_name_the_value(pipes, task, call, match):
    _, fp32, _ = pipes("bert", task)
    with pytest.raises(ValueError, match=match):
        call(_FillingPipe(fp32, "[MASK]"))


class _FillingPipe:
    """Calls the pipeline with "{mask}" replaced by the mask token."""

    def __init__(self, pipe, mask):
        self.pipe, self.mask = pipe, mask

    def __call__(self, *args, **kwargs):
        return self.pipe(*_fill(list(args), self.mask), **kwargs)


@pytest.mark.torch
def test_manifest_tasks_and_head_folders_serve_feature_extraction(tiny_export, pipes):
    from onnxpipe._manifest import load_manifest

    assert "zero-shot-classification" in load_manifest(tiny_export("bert", "zero-shot-classification")).tasks
    assert "zero-shot-classification" not in load_manifest(tiny_export("bert", "text-classification")).tasks
    qa = load_manifest(tiny_export("bert", "question-answering"))
    assert qa.outputs == ["start_logits", "end_logits", "last_hidden_state"]
    assert qa.tokenizer_config["cls_token_id"] == 101
    hidden = onnxpipe.pipeline("feature-extraction", model=qa.folder, precision="fp32")("Hello world")
    assert np.array(hidden).shape == (1, 4, 32)


@pytest.mark.torch
def test_export_refuses_zero_shot_without_entailment_label(tiny_checkpoint, tmp_path):
    from onnxpipe_export import export

    with pytest.raises(errors.ExportError, match="entailment"):
        export(
            tiny_checkpoint("bert", "text-classification"),
            task="zero-shot-classification",
            out=tmp_path / "m",
            precisions="fp32",
            progress=False,
        )
    assert not (tmp_path / "m").exists()


def _cli(args, stdin="", monkeypatch=None, capsys=None):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(args)
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


QA_JSONL = "".join(json.dumps({"question": q, "context": CONTEXT}) + "\n" for q in QUESTIONS)


@pytest.mark.torch
@pytest.mark.parametrize(
    "task,argv,stdin,expected",
    [
        (
            "question-answering",
            ["--question", QUESTIONS[0], "--context", CONTEXT],
            "",
            lambda p: [p(question=QUESTIONS[0], context=CONTEXT)],
        ),
        ("question-answering", ["-"], QA_JSONL, lambda p: p([{"question": q, "context": CONTEXT} for q in QUESTIONS])),
        (
            "question-answering",
            ["--input", "{file}", "--top-k", "2"],
            QA_JSONL,
            lambda p: p([{"question": q, "context": CONTEXT} for q in QUESTIONS], top_k=2),
        ),
        (
            "zero-shot-classification",
            ["--candidate-labels", "politics, sports", *TEXTS[:2]],
            "",
            lambda p: p(TEXTS[:2], candidate_labels=["politics", "sports"]),
        ),
        (
            "zero-shot-classification",
            ["--candidate-labels", "a,b", "--multi-label", "-"],
            "\n".join(TEXTS[:3]) + "\n",
            lambda p: p(TEXTS[:3], candidate_labels=["a", "b"], multi_label=True),
        ),
        (
            "token-classification",
            ["--aggregation-strategy", "simple", *TEXTS[:2]],
            "",
            lambda p: p(TEXTS[:2], aggregation_strategy="simple"),
        ),
        (
            "fill-mask",
            ["--top-k", "2", "Paris is the [MASK] of France."],
            "",
            lambda p: [p("Paris is the [MASK] of France.", top_k=2)],
        ),
    ],
    ids=["qa-args", "qa-stdin-jsonl", "qa-file-jsonl", "zs-args", "zs-stdin", "ner-args", "fill-mask-args"],
)
def test_cli_predict(pipes, tiny_export, tmp_path, monkeypatch, capsys, task, argv, stdin, expected):
    folder = str(tiny_export("bert", task))
    path = tmp_path / "in.jsonl"
    path.write_text(stdin, encoding="utf-8")
    argv = [str(path) if a == "{file}" else a for a in argv]
    code, lines, err = _cli(["predict", "--model", folder, "--precision", "fp32", *argv], stdin, monkeypatch, capsys)
    assert code == 0, err
    want = json.loads(json.dumps(expected(pipes("bert", task)[1])))
    assert first_difference(want, lines) is None


@pytest.mark.torch
@pytest.mark.parametrize(
    "task,argv,stdin,match",
    [
        ("question-answering", ["-"], "not json\n", "input line 1 is not JSON"),
        ("question-answering", ["--question", "q"], "", "both --question and --context"),
        ("zero-shot-classification", ["--task", "zero-shot-classification", "text"], "", "needs --candidate-labels"),
    ],
)
def test_cli_predict_errors(tiny_export, monkeypatch, capsys, task, argv, stdin, match):
    code, _, err = _cli(["predict", "--model", str(tiny_export("bert", task)), *argv], stdin, monkeypatch, capsys)
    assert code == 2 and match in err
