"""One model folder, every consumer: transformers.js, Optimum, fastembed, sentence-transformers.

Each consumer runs in its own environment (tests/interop/envs.py builds it from the registries on first use),
in one process per session that answers every job of a JSON file (tests/interop/run_*.py); the answers are
compared here with onnxpipe's. Folders: the committed models/minilm-sst2 (int8), the same checkpoint exported
fp32, and all-MiniLM-L6-v2 exported int8 + fp32. Texts: short SST-2 sentences and two over 256 tokens (one
over 512), so truncation is checked against every consumer too.

Bounds: fp32 scores within 1e-4 and embeddings cosine >= 0.9999 (what a consumer can tell apart from the
same model in PyTorch); int8 see INT8_*.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnxpipe

sys.path.insert(0, str(Path(__file__).parent / "interop"))
import envs  # noqa: E402

from conftest import all_minilm_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
COMMITTED = ROOT / "models" / "minilm-sst2"
HERE = Path(__file__).parent / "interop"

pytestmark = pytest.mark.torch  # the folders are exported in the session (export extra)

FP32_SCORE = 1e-4
FP32_COSINE = 0.9999
# int8: the same file under onnxruntime's default session options computes the same in every consumer, given the
# same batch (_batch_size). Measured on all-MiniLM-L6-v2 one text at a time: cosine >= 0.9999999 in Optimum,
# fastembed and transformers.js (whose onnxruntime-node is 1.30, not 1.32); while the runtime applied a load-time
# fusion switch that other consumers did not know, the committed sentiment file gave scores 0.068 apart. The
# bounds leave room for another onnxruntime release's kernels only:
# the consumers run on the CPU the test runs on, and the int8 files' weights are 7-bit, so their integer
# products are exact on AVX2 and VNNI alike (test_int8_reference.py); what differs between two onnxruntime
# builds is float rounding, which dynamic int8 turns into an activation scale now and then one step apart
# (AVX2 against VNNI, 80 SST-2 dev sentences: max 1.2e-4). Full-range s8 weights made this CPU-dependent
# (transformers.js on a long text: 4e-4 on an AVX2 EPYC, 8.4e-3 on a VNNI Xeon).
INT8_SCORE = 1e-3
INT8_COSINE = 0.9999


def _texts() -> list[str]:
    with open(SHARED / "data" / "sst2" / "dev.tsv", encoding="utf-8", newline="") as f:
        rows = [r["content"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    words = " ".join(rows[6:40]).split()
    # ~420 tokens (over all-MiniLM-L6-v2's max_seq_length 256) and ~800 tokens (over 512 too)
    return rows[:6] + [" ".join(words[:330]), " ".join((words + words)[:620])]


TEXTS = _texts()
SHORT = slice(0, 6)  # the texts within every folder's max_length
LONG = slice(6, None)


@pytest.fixture(scope="session")
def folders(minilm_sst2_export, all_minilm_export) -> dict[str, Path]:
    # conftest's exports, shared with test_real_weights.py; all-MiniLM's carries the STS Benchmark gate's figures
    return {"sst2-committed": COMMITTED, "sst2-fp32": minilm_sst2_export, "minilm": all_minilm_export}


# (job id, folder key, kind, precision): what each consumer is asked. fastembed and sentence-transformers read a
# classification folder for what they can: fastembed its logits output, sentence-transformers its hidden states.
CLASSIFY = [("sst2-int8", "sst2-committed", "classify", "int8"), ("sst2-fp32", "sst2-fp32", "classify", "fp32")]
EMBED = [("minilm-fp32", "minilm", "embed", "fp32"), ("minilm-int8", "minilm", "embed", "int8")]
JOBS = {
    "transformers.js": CLASSIFY + EMBED,
    "optimum": CLASSIFY + EMBED,
    "fastembed": CLASSIFY + EMBED,
    "sentence-transformers": EMBED
    + [("sst2-fp32-embed", "sst2-fp32", "embed", "fp32"), ("st-pytorch", None, "st-pytorch", "fp32")],
}


def _batch_size(precision: str) -> int:
    # Dynamic int8 quantizes activations with one scale per batch, padding included: the same file gives other
    # numbers in another batch. int8 is asked one text at a time everywhere (what the runtime's int8 figures
    # use too); fp32 in one padded batch, where batching changes nothing beyond float rounding.
    return 1 if precision == "int8" else len(TEXTS)


def _run_consumer(consumer: str, folders: dict, tmp: Path) -> dict:
    jobs = [
        {
            "id": jid,
            "folder": str(folders[key]) if key else str(all_minilm_checkpoint()),
            "kind": kind,
            "precision": p,
            "texts": TEXTS,
            "dim": 2 if kind == "classify" else 384,
            "batch_size": _batch_size(p),
        }
        for jid, key, kind, p in JOBS[consumer]
    ]
    return _run_jobs(consumer, jobs, tmp)


def _run_jobs(consumer: str, jobs: list[dict], tmp: Path) -> dict:
    where = envs.ensure(consumer)
    src, dst = tmp / "in.json", tmp / "out.json"
    src.write_text(json.dumps({"jobs": jobs}), encoding="utf-8")
    if consumer == "transformers.js":
        # an ES module resolves its imports from its own folder: the script runs beside node_modules
        shutil.copy(HERE / "run_transformersjs.mjs", where / "run.mjs")
        cmd, cwd = ["node", "run.mjs", str(src), str(dst)], where
    else:
        cmd, cwd = (
            [str(where / "bin" / "python"), str(HERE / f"run_{consumer.replace('-', '_')}.py"), str(src), str(dst)],
            tmp,
        )
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and dst.is_file(), f"{consumer} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return json.loads(dst.read_text(encoding="utf-8"))["results"]


@pytest.fixture(scope="session")
def answers(folders, tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(consumer: str) -> dict:
        if consumer not in cache:
            cache[consumer] = _run_consumer(consumer, folders, tmp_path_factory.mktemp(consumer.replace(".", "")))
        return cache[consumer]

    return get


@pytest.fixture(scope="session")
def onnxpipe_answers(folders) -> dict:
    out = {}
    for jid, key, kind, precision in CLASSIFY + EMBED + [("sst2-fp32-embed", "sst2-fp32", "embed", "fp32")]:
        one_batch = {"batch_size": _batch_size(precision)}  # as the consumers are asked (_batch_size)
        if kind == "classify":
            pipe = onnxpipe.pipeline("text-classification", model=folders[key], precision=precision, **one_batch)
            out[jid] = {"scores": [{r["label"]: r["score"] for r in rows} for rows in pipe(TEXTS, top_k=None)]}
        else:
            pipe = onnxpipe.pipeline("sentence-embeddings", model=folders[key], precision=precision, **one_batch)
            out[jid] = {"embeddings": np.asarray(pipe(TEXTS))}
    out["sst2-int8-tjs-ids"] = {"scores": _scores_on_transformersjs_ids(folders["sst2-committed"], TEXTS[LONG])}
    return out


def _scores_on_transformersjs_ids(folder: Path, texts: list[str]) -> list[dict[str, float]]:
    """onnxpipe's int8 scores on the token ids transformers.js feeds for texts over max_length: the full
    encoding cut to max_length, which drops the final [SEP] (TJS_LONG_XFAIL)."""
    from tokenizers import Tokenizer

    from onnxpipe import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, precision="int8")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    labels = model.manifest.labels
    out = []
    for text in texts:
        ids = np.array([tok.encode(text).ids[: model.manifest.max_length]], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        z = model.run(model.feeds(feeds), ["logits"])[0][0].astype(np.float64)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        out.append({labels[i]: float(p[i]) for i in range(len(p))})
    return out


def _answer(answers, consumer, jid) -> dict:
    got = answers(consumer)[jid]
    assert "error" not in got, f"{consumer} could not run {jid}:\n{got.get('error')}"
    return got


def _cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# transformers.js 4.3 truncates after adding special tokens and cuts the final [SEP] off (tokenization_utils.js,
# truncateHelper on the full encoding); no file in the folder changes that, so its answers on texts over
# max_length differ (cosine ~0.9965 on all-MiniLM-L6-v2). Asserted as an expected failure, strict: when
# transformers.js fixes it, this test says so.
TJS_LONG_XFAIL = pytest.mark.xfail(
    strict=True, reason="transformers.js drops [SEP] when it truncates (texts over max_length)"
)
CONSUMERS = ("transformers.js", "optimum", "fastembed", "sentence-transformers")


def _cases(jids, consumers, xfail_tjs_long):
    """(jid, consumer, part) parameters; transformers.js on long texts is an expected failure where asked."""
    return [
        pytest.param(
            jid,
            c,
            part,
            marks=[TJS_LONG_XFAIL] if (c, part) == ("transformers.js", "long") and jid in xfail_tjs_long else [],
        )
        for jid in jids
        for c in consumers
        for part in ("short", "long")
    ]


# transformers.js on long texts: in fp32 the cut [SEP] shows (strict xfail). In int8 it is compared with onnxpipe
# on the very ids transformers.js feeds (_scores_on_transformersjs_ids): a text's dynamic activation scales
# depend on its tokens, so the cut [SEP] moved the score by 4e-4 on an AVX2 EPYC and by 8.4e-3 on a VNNI Xeon
# with the full-range s8 file: no bound on different inputs holds on every CPU.
@pytest.mark.parametrize("jid,consumer,part", _cases(["sst2-int8", "sst2-fp32"], CONSUMERS[:3], ["sst2-fp32"]))
def test_classification_same_labels_and_scores(answers, onnxpipe_answers, consumer, part, jid):
    bound = FP32_SCORE if jid.endswith("fp32") else INT8_SCORE
    rows = slice(*((0, 6) if part == "short" else (6, None)))
    want = onnxpipe_answers[jid]["scores"][rows]
    if (jid, consumer, part) == ("sst2-int8", "transformers.js", "long"):
        want = onnxpipe_answers["sst2-int8-tjs-ids"]["scores"]
    got = _answer(answers, consumer, jid)["scores"][rows]
    labels = sorted(want[0])
    w = np.array([[r[label] for label in labels] for r in want])
    g = np.array([[r[label] for label in labels] for r in got])
    diff = float(np.abs(w - g).max())
    assert (w.argmax(1) == g.argmax(1)).all() and diff <= bound, f"{consumer} {jid}: max score diff {diff:.2e}"


@pytest.mark.parametrize("jid,consumer,part", _cases([j[0] for j in EMBED], CONSUMERS, [j[0] for j in EMBED]))
def test_embeddings_same_vectors(answers, onnxpipe_answers, consumer, part, jid):
    bound = FP32_COSINE if jid.endswith("fp32") else INT8_COSINE
    rows = slice(*((0, 6) if part == "short" else (6, None)))
    got = np.asarray(_answer(answers, consumer, jid)["embeddings"])[rows]
    cos = _cosines(onnxpipe_answers[jid]["embeddings"][rows], got)
    assert cos.min() >= bound, f"{consumer} {jid}: cosines {cos.round(6)}"
    # the folder's Normalize module (modules.json) reaches the consumers that read it; norm ~3.8 without
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4), np.linalg.norm(got, axis=1)


def test_sentence_transformers_builds_the_exported_modules(answers, folders):
    got = _answer(answers, "sentence-transformers", "minilm-fp32")
    assert got["modules"] == ["Transformer", "Pooling", "Normalize"]
    assert got["max_seq_length"] == json.loads((folders["minilm"] / "manifest.json").read_text())["max_length"] == 256


def test_embeddings_equal_sentence_transformers_pytorch(answers, onnxpipe_answers):
    # "as sentence-transformers computes them": its own PyTorch model on the source checkpoint, short and long texts
    want = np.asarray(_answer(answers, "sentence-transformers", "st-pytorch")["embeddings"])
    cos = _cosines(onnxpipe_answers["minilm-fp32"]["embeddings"], want)
    assert cos.min() >= FP32_COSINE, f"cosines to sentence-transformers (PyTorch): {cos.round(6)}"


def test_sentence_transformers_reads_the_classification_folder(answers, onnxpipe_answers):
    # no modules.json there: Transformer + mean Pooling on last_hidden_state, as onnxpipe's feature extraction
    got = np.asarray(_answer(answers, "sentence-transformers", "sst2-fp32-embed")["embeddings"])
    cos = _cosines(onnxpipe_answers["sst2-fp32-embed"]["embeddings"], got)
    assert cos.min() >= FP32_COSINE, cos.round(6)


def test_sts_benchmark_figures_are_recorded_and_shown(folders, capsys):
    from onnxpipe._cli import main

    figures = json.loads((folders["minilm"] / "manifest.json").read_text())["validation_data"]
    assert figures["pairs"] == 1500 and figures["int8_gate"]["met"] is True
    fp32, int8 = figures["variants"]["fp32"], figures["variants"]["int8"]
    assert abs(fp32["batched"] - figures["pytorch"]) <= 0.05 and abs(fp32["one_at_a_time"] - figures["pytorch"]) <= 0.05
    scores = ("batched", "one_at_a_time")
    assert min(int8[k] for k in scores) >= min(fp32[k] for k in scores) - 1.0
    # batch invariance: each sentence's pooled vector alone vs inside the pipelines' padded batches
    assert fp32["batch_invariance"]["min_cosine"] >= 0.9999
    assert 0 < int8["batch_invariance"]["min_cosine"] <= int8["batch_invariance"]["mean_cosine"] <= 1 + 1e-9
    assert main(["info", str(folders["minilm"])]) == 0
    assert f"PyTorch {figures['pytorch']:.2f}" in capsys.readouterr().out


# Encoder-decoders: transformers.js loads each tiny folder with its Seq2Seq class and generates greedily from the
# token ids onnxpipe's tokenizer gives (the tests' tiny T5 and Marian tokenizers use an Nmt normalizer that
# transformers.js does not implement; real T5 and Marian tokenizers do not). Its tokens must be onnxpipe's: the
# folder's fused decoder (com.microsoft MultiHeadAttention) running in onnxruntime-node, fp32 and int8.
SEQ2SEQ = [("t5", "fp32"), ("t5", "int8"), ("bart", "fp32"), ("marian", "fp32")]
SEQ2SEQ_TEXT = "The film was great, and the music even better."


@pytest.fixture(scope="module")
def seq2seq_folders(tiny_export):
    # the precisions test_seq2seq.py exports, so the test cache serves both
    return {
        a: tiny_export(a, "text2text-generation", precisions="int8,fp32" if a == "t5" else "fp32")
        for a in {"t5", "bart", "marian"}
    }


def test_transformersjs_generates_onnxpipe_tokens_from_encoder_decoder_folders(seq2seq_folders, tmp_path):
    jobs, want = [], {}
    for arch, precision in SEQ2SEQ:
        pipe = onnxpipe.pipeline("text2text-generation", model=seq2seq_folders[arch], precision=precision)
        ids = [int(i) for i in pipe.tokenizer.encode_batch([SEQ2SEQ_TEXT])[0].ids]
        out = pipe(SEQ2SEQ_TEXT, max_new_tokens=8, num_beams=1, do_sample=False, return_tensors=True)
        jid = f"{arch}-{precision}"
        want[jid] = [int(t) for t in out[0]["generated_token_ids"]]
        jobs.append({"id": jid, "folder": str(seq2seq_folders[arch]), "kind": "generate", "precision": precision})
        jobs[-1].update(ids=ids, max_new_tokens=8)
    got = _run_jobs("transformers.js", jobs, tmp_path)
    for jid, tokens in want.items():
        assert "error" not in got[jid], f"transformers.js could not run {jid}:\n{got[jid].get('error')}"
        assert got[jid]["tokens"] == tokens, jid
