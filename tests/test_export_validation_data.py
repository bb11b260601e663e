"""--validation-data: the accuracy figures an export records must be the ones PyTorch and the runtime give."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch

SENTENCES = [
    "a gorgeous , witty , seductive movie .",
    "one long string of cliches .",
    "",
    "Not bad at all.",
    "I hate this so much!",
    "The food was cold and nobody apologised.",
    "A masterpiece.",
    "OK.",
]


def test_validation_data_figures_match_pytorch_and_runtime(tiny_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer as HFTokenizer

    from onnxpipe import AutoModelForSequenceClassification as OnnxClassifier, AutoTokenizer
    from onnxpipe_export import export

    ckpt = tiny_checkpoint("bert", "text-classification")
    gold = [i % 3 for i in range(len(SENTENCES))]
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tcontent\n" + "".join(f"{g}\t{s}\n" for g, s in zip(gold, SENTENCES)), encoding="utf-8")
    out = export(
        ckpt, task="text-classification", out=tmp_path / "m", precisions="int8", progress=False, validation_data=tsv
    )
    figures = json.loads((out / "manifest.json").read_text())["validation_data"]

    hf_tok, hf_model = HFTokenizer.from_pretrained(ckpt), AutoModelForSequenceClassification.from_pretrained(ckpt)
    with torch.no_grad():
        ref = hf_model(**hf_tok(SENTENCES, padding=True, return_tensors="pt")).logits.argmax(-1).numpy()
    tok, model = AutoTokenizer.from_pretrained(out), OnnxClassifier.from_pretrained(out, precision="int8")
    got = np.array([model(**tok([s], return_tensors="np")).logits[0].argmax() for s in SENTENCES])

    assert figures["sentences"] == len(SENTENCES)
    assert figures["pytorch_accuracy"] == pytest.approx(float((ref == np.array(gold)).mean()))
    assert set(figures["variants"]) == {"int8", "fp32"}  # fp32 is measured even when only int8 is kept
    int8 = figures["variants"]["int8"]
    assert int8["accuracy"] == pytest.approx(float((got == np.array(gold)).mean()))
    assert int8["label_agreement_with_pytorch"] == pytest.approx(float((got == ref).mean()))
    assert figures["variants"]["fp32"]["label_agreement_with_pytorch"] == 1.0


def test_labelled_sentences_refused_for_feature_extraction_which_takes_sts_pairs(tiny_checkpoint, tmp_path):
    # feature extraction validates on STS Benchmark pairs (similarity, not labels); an SST-2 file is refused
    # before any work
    from onnxpipe.errors import ExportError
    from onnxpipe_export import export

    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tcontent\n1\tgood\n", encoding="utf-8")
    with pytest.raises(ExportError, match="line 1: not an STS Benchmark row"):
        export(
            tiny_checkpoint("bert", "feature-extraction"),
            task="feature-extraction",
            out=tmp_path / "m",
            precisions="fp32",
            progress=False,
            validation_data=tsv,
        )
    assert not (tmp_path / "m").exists()


# -- --int8-recipe search ------------------------------------------------------------------------------------
def _tsv(tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "label\tcontent\n" + "".join(f"{i % 2}\t{s}\n" for i, s in enumerate(SENTENCES * 4)), encoding="utf-8"
    )
    return tsv


# The search's mechanics on one candidate per lever instead of all of them (each takes seconds to quantize, measure
# and time): every graph (fused, fused attention only, fused without attention, unfused), each method (dynamic,
# MatMulNBits, static: skipped without calibration data), s8 and u8 weights, per-channel and per-tensor, 7-bit and
# full-range (which can saturate, so never passes the gates). The default is always added.
MECHANICS_CANDIDATES = [
    "fused-pt-s8",
    "fused-pc-u8",
    "fused-no-attention-pc-s8",
    "unfused-pc-s8-rr-no-skipln",
    "unfused-nb4-b32",
    "fused-static-minmax",
]


def test_int8_search_records_every_candidate_and_keeps_the_one_its_rule_picks(tiny_checkpoint, tmp_path, monkeypatch):
    import functools
    import warnings

    import onnxpipe_export._int8_search as int8_search
    from onnxpipe import AutoModelForSequenceClassification as OnnxClassifier, AutoTokenizer
    from onnxpipe._manifest import sha256_file
    from onnxpipe_export import export
    from onnxpipe_export._int8_search import QUALITY_GATES
    from onnxpipe_export._optimize import DEFAULT_INT8, INT8_CANDIDATES

    # The search over a list of candidates (the registry cut down to MECHANICS_CANDIDATES; the next test shows the
    # export uses the whole registry), timed in one round instead of three: the rounds only steady the speed
    # figures on a noisy machine, and nothing here depends on which candidate is faster, only on the rule applied
    # to the figures recorded.
    few = {name: INT8_CANDIDATES[name] for name in [DEFAULT_INT8, *MECHANICS_CANDIDATES]}
    monkeypatch.setattr(int8_search, "INT8_CANDIDATES", few)
    monkeypatch.setattr(int8_search, "search", functools.partial(int8_search.search, rounds=1))
    tsv = _tsv(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export(
            tiny_checkpoint("bert", "text-classification"),
            task="text-classification",
            out=tmp_path / "m",
            precisions="int8",
            progress=False,
            validation_data=tsv,
            int8_recipe="search",
        )
    data = json.loads((out / "manifest.json").read_text())
    int8 = data["variants"]["int8"]
    found = int8["recipe_search"]
    rows = found["candidates"]
    assert set(rows) == set(few)  # every candidate is listed
    assert found["data"]["candidates_tried"] == "all"
    # without --calibration-data the static ones are skipped (their row says why); the others were measured
    measured = {n: r for n, r in rows.items() if "skipped" not in r}
    assert {n for n in rows if n not in measured} == {n for n in rows if rows[n]["recipe"]["method"] == "static"}
    for row in measured.values():
        assert row["recipe"]["graph"] in {"fused", "fused-attention-only", "fused-no-attention", "unfused"}
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["label_agreement_with_pytorch"] <= 1
        assert row["sentences_per_s"] > 0 and row["batch1_p50_ms"] > 0 and row["size_mb"] > 0
        drop_ok = row["accuracy"] >= found["data"]["pytorch_accuracy"] - QUALITY_GATES["max_accuracy_drop"]
        agree_ok = row["label_agreement_with_pytorch"] >= QUALITY_GATES["min_label_agreement"]
        assert row["quality_gates_met"] == (drop_ok and agree_ok)
        # dynamic files count as invariant because the runtime runs them alone; the others must be. And no
        # candidate whose integer matmuls AVX2-only CPUs can saturate passes, whatever its figures here
        invariant_ok = row["batch_invariant"] or row["runs_alone"]
        assert row["gates_met"] == (drop_ok and agree_ok and invariant_ok and row["cannot_saturate"])
        assert row["batch_invariant"] == (row["recipe"]["method"] != "dynamic")  # tiny bert: exactly so
    assert rows[DEFAULT_INT8]["speed_vs_default"] == 1.0
    chosen = found["chosen"]
    passing = [n for n, r in measured.items() if r["gates_met"]]
    if passing:
        assert found["gates_met"] and chosen == max(passing, key=lambda n: rows[n]["speed_vs_default"])
    else:
        assert not found["gates_met"] and any("quality gates" in str(w.message) for w in caught)
    assert int8["recipe"] == {**rows[chosen]["recipe"], "name": chosen}
    assert found["timing"]["rounds"] == 1

    # The kept file is the chosen candidate: the folder verifies, and its figures are the chosen row's.
    assert data["files"]["onnx/model_quantized.onnx"]["sha256"] == sha256_file(out / "onnx/model_quantized.onnx")
    assert not (out / "search").exists() and not (out / "raw").exists()
    assert data["validation_data"]["variants"]["int8"]["accuracy"] == pytest.approx(rows[chosen]["accuracy"])
    tok, model = AutoTokenizer.from_pretrained(out), OnnxClassifier.from_pretrained(out)
    assert model(**tok(SENTENCES[:2], padding=True, return_tensors="np")).logits.shape == (2, 3)


class _Stop(Exception):
    pass


def test_the_export_cli_searches_the_whole_registry(tiny_checkpoint, tmp_path, monkeypatch):
    """What `onnxpipe export --int8-recipe search` hands the search, without running it: every candidate of the
    registry (``candidates=None``, and the search iterates the very INT8_CANDIDATES the registry defines).
    --int8-candidates limiting it is test_int8_invariance's."""
    import onnxpipe_export._int8_search as int8_search
    from onnxpipe._cli import main
    from onnxpipe_export import _int8_recipes

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop  # the search's inputs are what this test reads; measuring 25 candidates is the bench's job

    monkeypatch.setattr(int8_search, "search", spy)
    argv = ["export", str(tiny_checkpoint("bert", "text-classification")), "--out", str(tmp_path / "m")]
    argv += ["--precision", "int8", "--validation-data", str(_tsv(tmp_path)), "--int8-recipe", "search", "--quiet"]
    with pytest.raises(_Stop):
        main(argv)
    assert seen["candidates"] is None
    assert int8_search.INT8_CANDIDATES is _int8_recipes.INT8_CANDIDATES and len(_int8_recipes.INT8_CANDIDATES) >= 25
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"int8_recipe": "per-channel-please"}, "unknown int8 recipe 'per-channel-please'; valid: fused-pc-s8"),
        ({"int8_recipe": "search"}, "--validation-data"),
        ({"int8_recipe": "search", "precisions": "fp32", "validation_data": "TSV"}, "keep int8"),
    ],
)
def test_int8_recipe_mistakes_are_refused_before_any_work(tiny_checkpoint, tmp_path, kwargs, match):
    from onnxpipe.errors import ExportError
    from onnxpipe_export import export

    if kwargs.get("validation_data") == "TSV":
        kwargs["validation_data"] = _tsv(tmp_path)
    kwargs.setdefault("precisions", "int8")
    with pytest.raises(ExportError, match=match):
        export(
            tiny_checkpoint("bert", "text-classification"),
            task="text-classification",
            out=tmp_path / "m",
            progress=False,
            **kwargs,
        )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", ["fused-pc-s8", "unfused-pc-s8"])
def test_a_named_int8_recipe_is_the_one_used(tiny_checkpoint, tmp_path, name):
    from onnxpipe import pipeline
    from onnxpipe_export import export

    out = export(
        tiny_checkpoint("bert", "text-classification"),
        task="text-classification",
        out=tmp_path / "m",
        precisions="int8",
        progress=False,
        int8_recipe=name,
    )
    data = json.loads((out / "manifest.json").read_text())
    assert data["variants"]["int8"]["recipe"]["name"] == name
    assert ("fused_operators" in data["variants"]["int8"]) == (name == "fused-pc-s8")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "onnx/model_quantized.onnx")).graph.node}
    assert ("QAttention" in ops) == (name == "fused-pc-s8")  # the unfused graph keeps attention as MatMuls
    assert len(pipeline("text-classification", model=str(out))(SENTENCES)) == len(SENTENCES)


def test_cli_help_names_every_int8_recipe():
    from onnxpipe._cli import build_parser
    from onnxpipe_export._optimize import DEFAULT_INT8, INT8_CANDIDATES

    export_parser = build_parser()._subparsers._group_actions[0].choices["export"]
    help_text = next(a.help for a in export_parser._actions if a.dest == "int8_recipe")
    named = set(help_text.split("or a candidate: ")[1].replace(" ", "").split(","))
    assert named == set(INT8_CANDIDATES)
    assert help_text.split("default (")[1].split(")")[0] == DEFAULT_INT8


def test_the_int8_file_computes_the_same_under_onnxruntimes_defaults(tiny_checkpoint, tmp_path):
    # The recipe's "no SkipLayerNorm" is baked into the graph (residual Add written as Sum), not a
    # load-time switch only the runtime knows, so any consumer with onnxruntime's default options computes
    # exactly what the runtime computes from the same file.
    import onnx
    import onnxruntime as ort

    from onnxpipe import AutoModelForSequenceClassification as OnnxClassifier, AutoTokenizer as OnnxTokenizer
    from onnxpipe_export import export

    out = export(
        tiny_checkpoint("bert", "text-classification"),
        task="text-classification",
        out=tmp_path / "m",
        precisions="int8",
        progress=False,
        int8_recipe="fused-attention-only-pc-s8-no-skipln",
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert "cpu_disabled_optimizers" not in manifest["variants"]["int8"]
    assert manifest["variants"]["int8"]["recipe"]["residual_add_as_sum"] is True
    ops = [n.op_type for n in onnx.load(str(out / "onnx" / "model_quantized.onnx")).graph.node]
    assert ops.count("Sum") >= 2 * 2  # the two residuals of each of the 2 layers, at least

    feeds = dict(OnnxTokenizer.from_pretrained(out)(["a b c", "hello world again"], padding=True, return_tensors="np"))
    ours = OnnxClassifier.from_pretrained(out, precision="int8")(**feeds).logits
    plain = ort.InferenceSession(str(out / "onnx" / "model_quantized.onnx"), providers=["CPUExecutionProvider"])
    theirs = plain.run(["logits"], {i.name: feeds[i.name] for i in plain.get_inputs()})[0]
    np.testing.assert_array_equal(ours, theirs)
    fused = [n.op_type for n in _optimized_graph(out / "onnx" / "model_quantized.onnx", tmp_path).graph.node]
    assert "SkipLayerNormalization" not in fused


def _optimized_graph(path, tmp_path):
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")  # what onnxruntime's defaults made of it
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return onnx.load(opts.optimized_model_filepath)


def test_load_time_switches_of_older_folders_still_reach_onnxruntime_on_cpu_only(
    tiny_checkpoint, tmp_path, monkeypatch
):
    # Folders exported before the residual Add was baked in as Sum carry cpu_disabled_optimizers in the manifest;
    # the runtime honours it.
    import onnxruntime as ort

    from onnxpipe import AutoModelForSequenceClassification as OnnxClassifier
    from onnxpipe._manifest import load_manifest
    from onnxpipe._session import SessionChoice, _disabled_optimizers
    from onnxpipe_export import export

    out = export(
        tiny_checkpoint("bert", "text-classification"),
        task="text-classification",
        out=tmp_path / "m",
        precisions="int8,fp32",
        progress=False,
    )
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    data["variants"]["int8"]["cpu_disabled_optimizers"] = ["SkipLayerNormFusion"]
    path.write_text(json.dumps(data))
    manifest = load_manifest(out)
    seen = []
    real = ort.InferenceSession

    def spy(path, *args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    OnnxClassifier.from_pretrained(out, precision="int8")
    OnnxClassifier.from_pretrained(out, precision="fp32")
    assert seen == [["SkipLayerNormFusion"], None]
    # CUDA sessions keep every fusion (its SkipLayerNorm kernel is a different one).
    assert _disabled_optimizers(manifest, SessionChoice("cuda", "int8")) == {}
