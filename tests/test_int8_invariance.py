"""Int8 files whose answer does not depend on the batch, and the invariance figures exports record.

Tiny random models make accuracy meaningless, so these tests check what does not depend on the weights: every
batch-invariant recipe exports, loads in the runtime and gives each text exactly its alone answer inside a
padded batch; the validation figures see the difference between a dynamic file and an fp32 one; the search
says why it skipped the static candidates.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.torch

MIXED = [  # lengths 3..20 tokens, an empty text, emoji: one padded batch holds all of them
    "a",
    "a gorgeous , witty , seductive movie .",
    "",
    "one long string of cliches , and then more cliches , and the ending is the longest of them all",
    "ok 👍",
    "Not bad at all.",
    "The food was cold and nobody apologised.",
]
CALIBRATION = [f"sentence {i} is {'rather good ' * (i % 6)}and {'quite bad ' * (i % 4)}." for i in range(48)]


def _invariant_recipes() -> list[str]:
    from onnxpipe_export._int8_recipes import INT8_CANDIDATES

    invariant = ("MatMulNBits", "static", "fixed-scales")
    return [name for name, entry in INT8_CANDIDATES.items() if entry.get("method") in invariant]


def _alone_and_padded(out, sentences, output="logits"):
    from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    cls = AutoModelForSequenceClassification if output == "logits" else AutoModel
    tok, model = AutoTokenizer.from_pretrained(out), cls.from_pretrained(out, precision="int8")
    feeds = dict(tok(sentences, padding=True, return_tensors="np"))
    batch = model.run(model.feeds(feeds), [output])[0]
    alone = [model.run(model.feeds(dict(tok([s], return_tensors="np"))), [output])[0][0] for s in sentences]
    return alone, batch, feeds["attention_mask"]


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "sentences.txt"
    path.write_text("\n".join(CALIBRATION) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", _invariant_recipes())
def test_each_invariant_recipe_exports_loads_and_answers_alone_inside_a_padded_batch(
    tiny_checkpoint, calibration_file, tmp_path, name
):
    import onnx

    from onnxpipe_export import export
    from onnxpipe_export._int8_recipes import recipe_named

    out = export(
        tiny_checkpoint("bert", "text-classification"),
        out=tmp_path / "m",
        precisions="int8",
        progress=False,
        int8_recipe=name,
        calibration_data=calibration_file,
    )
    recipe = json.loads((out / "manifest.json").read_text())["variants"]["int8"]["recipe"]
    method = recipe_named(name)["method"]
    assert recipe["name"] == name and recipe["method"] == method  # the runtime picks its execution mode by it
    ops = {n.op_type for n in onnx.load(str(out / "onnx/model_quantized.onnx")).graph.node}
    assert {"MatMulNBits"} <= ops if method == "MatMulNBits" else {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "MatMulInteger"}  # no per-batch scale
    assert recipe["matmuls_quantized"] > 0  # static: activations too, not only weights behind a DequantizeLinear
    if method in ("static", "fixed-scales"):
        assert recipe["calibration_data"]["file"] == str(calibration_file)
        assert recipe["calibration_data"]["sentences"] == len(CALIBRATION)
    alone, batch, _ = _alone_and_padded(out, MIXED)
    np.testing.assert_allclose(np.stack(alone), batch, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "arch,head,name",
    [
        ("roberta", "text-classification", "unfused-nb8-b32"),
        ("distilbert", "text-classification", "fused-attention-only-nb4-b32"),
        ("deberta-v2", "text-classification", "unfused-static-minmax"),
        ("xlm-roberta", "feature-extraction", "fused-attention-only-static-minmax"),
        ("mpnet", "feature-extraction", "unfused-nb8-b32"),
        ("electra", "text-classification", "fused-static-percentile"),
    ],
)
def test_invariant_recipes_on_other_architectures_and_tasks(
    tiny_checkpoint, calibration_file, tmp_path, arch, head, name
):
    from onnxpipe_export import export

    out = export(
        tiny_checkpoint(arch, head),
        task=head,
        out=tmp_path / "m",
        precisions="int8,fp32",
        progress=False,
        int8_recipe=name,
        calibration_data=calibration_file,
    )
    output = "logits" if head == "text-classification" else "last_hidden_state"
    alone, batch, mask = _alone_and_padded(out, MIXED, output)
    for i, row in enumerate(alone):  # hidden states compared on each text's own tokens
        got = batch[i] if output == "logits" else batch[i][mask[i].astype(bool)]
        np.testing.assert_allclose(row, got, rtol=0, atol=1e-5)
    validation = json.loads((out / "manifest.json").read_text())["variants"]["int8"]["validation"]
    assert validation["min_cosine_mean_pooled"] > 0.9  # close to PyTorch: the file computes the model


# -- the figures an export records ---------------------------------------------------------------------------
DYNAMIC = "fused-attention-only-pc-s8-rr-no-skipln"  # the default's graph with per-call activation scales


@pytest.fixture(scope="module")
def int8_folder(tiny_export, tiny_checkpoint, tmp_path_factory):
    """``int8_folder(head, recipe)``: the tiny BERT's int8 + fp32 folder, with the default recipe (fixed
    activation scales) or DYNAMIC."""
    made: dict = {}

    def make(head, recipe):
        if recipe == "default":
            return tiny_export("bert", head, "int8,fp32")
        if (head, recipe) not in made:
            from onnxpipe_export import export

            made[head, recipe] = export(
                tiny_checkpoint("bert", head),
                out=tmp_path_factory.mktemp(f"int8-{recipe}") / "m",
                precisions="int8,fp32",
                progress=False,
                int8_recipe=recipe,
            )
        return made[head, recipe]

    return make


@pytest.mark.parametrize(("recipe", "method"), [("default", "fixed-scales"), (DYNAMIC, "dynamic")])
def test_dataset_figures_record_batch_invariance(int8_folder, tiny_checkpoint, tmp_path, recipe, method):
    # A dynamic int8 file changes its scores inside a mixed batch; the default (fixed scales) and fp32 do not.
    from onnxpipe._for_export import AutoTokenizer
    from onnxpipe._manifest import load_manifest
    from onnxpipe_export._load import load_checkpoint
    from onnxpipe_export._validate import dataset_figures

    out = int8_folder("text-classification", recipe)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{i % 3}\t{s}\n" for i, s in enumerate(MIXED * 2)), encoding="utf-8")
    manifest = load_manifest(out)
    assert manifest.variants["int8"].recipe["method"] == method
    ckpt = load_checkpoint(
        str(tiny_checkpoint("bert", "text-classification")), "text-classification", False, False, None
    )
    figures = dataset_figures(ckpt, manifest, AutoTokenizer.from_manifest(manifest), tsv)
    fp32, int8 = (figures["variants"][p]["batch_invariance"] for p in ("fp32", "int8"))
    assert set(fp32) == set(int8) == {"max_score_change", "p99_score_change", "label_flips"}
    assert fp32["max_score_change"] < 1e-5 and fp32["label_flips"] == 0
    if method == "dynamic":
        assert int8["max_score_change"] > 1e-4
    else:
        assert int8["max_score_change"] < 1e-5 and int8["label_flips"] == 0
    for inv in (fp32, int8):
        assert 0 <= inv["p99_score_change"] <= inv["max_score_change"] <= 1
        assert 0 <= inv["label_flips"] <= len(MIXED) * 2


@pytest.mark.parametrize(("recipe", "method"), [("default", "fixed-scales"), (DYNAMIC, "dynamic")])
def test_sts_figures_record_batch_invariance_of_the_pooled_vectors(
    int8_folder, tiny_checkpoint, tmp_path, monkeypatch, recipe, method
):
    import onnxpipe_export._stsb as stsb
    from onnxpipe._for_export import AutoTokenizer
    from onnxpipe._manifest import load_manifest
    from onnxpipe_export._load import load_checkpoint

    out = int8_folder("feature-extraction", recipe)
    sts = tmp_path / "sts.csv"
    pairs = [(a, b) for a in MIXED for b in MIXED if a < b][:12]
    sts.write_text(
        "".join(f"main\tx\t2012\t{i}\t{i % 6}.0\t{a}\t{b}\n" for i, (a, b) in enumerate(pairs)), encoding="utf-8"
    )
    monkeypatch.setattr(stsb, "_gate", lambda figures: None)  # random weights: the Spearman gate means nothing here
    manifest = load_manifest(out)
    assert manifest.variants["int8"].recipe["method"] == method
    ckpt = load_checkpoint(str(tiny_checkpoint("bert", "feature-extraction")), "feature-extraction", False, False, None)
    figures = stsb.sts_figures(ckpt, manifest, AutoTokenizer.from_manifest(manifest), sts)
    fp32, int8 = (figures["variants"][p]["batch_invariance"] for p in ("fp32", "int8"))
    assert fp32["min_cosine"] > 0.99999
    assert (int8["min_cosine"] < 0.99999) == (method == "dynamic")
    for inv in (fp32, int8):
        assert inv["min_cosine"] <= inv["mean_cosine"] <= 1 + 1e-9
    assert {"batched", "one_at_a_time"} <= set(figures["variants"]["int8"])


def test_info_shows_each_variants_batch_invariance(tiny_checkpoint, tmp_path, capsys):
    from onnxpipe._cli import main
    from onnxpipe_export import export

    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{i % 3}\t{s}\n" for i, s in enumerate(MIXED)), encoding="utf-8")
    out = export(
        tiny_checkpoint("bert", "text-classification"),
        out=tmp_path / "m",
        precisions="int8,fp32",
        progress=False,
        validation_data=tsv,
        int8_recipe="unfused-nb8-b32",
    )
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recipe: 8-bit weight-only MatMulNBits, block 32" in text
    lines = [line for line in text.splitlines() if "alone vs batched" in line]
    assert len(lines) == 2 and all("max score change" in line and "0 label flips" in line for line in lines)


# -- the recipe search -----------------------------------------------------------------------------------------
def _labelled(tmp_path):
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("label\tsentence\n" + "".join(f"{i % 2}\t{s}\n" for i, s in enumerate(MIXED * 3)), encoding="utf-8")
    return tsv


def test_search_skips_static_candidates_without_calibration_data_and_says_why(tiny_checkpoint, tmp_path, monkeypatch):
    import onnxpipe_export._int8_search as search
    from onnxpipe_export import export
    from onnxpipe_export._calibrate import BUILTIN_NAME
    from onnxpipe_export._int8_recipes import DEFAULT_INT8, INT8_CANDIDATES

    few = [DEFAULT_INT8, "unfused-nb4-b32", "unfused-static-minmax", "fused-static-entropy"]
    monkeypatch.setattr(search, "INT8_CANDIDATES", {n: INT8_CANDIDATES[n] for n in few})
    out = export(
        tiny_checkpoint("bert", "text-classification"),
        out=tmp_path / "m",
        precisions="int8",
        progress=False,
        validation_data=_labelled(tmp_path),
        int8_recipe="search",
    )
    found = json.loads((out / "manifest.json").read_text())["variants"]["int8"]["recipe_search"]
    rows = found["candidates"]
    assert set(rows) == set(few) and found["data"]["calibration"] == BUILTIN_NAME  # what fixed scales used
    for name in ("unfused-static-minmax", "fused-static-entropy"):
        assert set(rows[name]) == {"recipe", "skipped"} and "--calibration-data" in rows[name]["skipped"]
    assert found["chosen"] in (DEFAULT_INT8, "unfused-nb4-b32")
    assert rows["unfused-nb4-b32"]["batch_invariant"] is True and rows["unfused-nb4-b32"]["runs_alone"] is False
    assert rows[DEFAULT_INT8]["runs_alone"] is True and rows[DEFAULT_INT8]["batch_invariant"] is True
    assert rows[DEFAULT_INT8]["recipe"]["calibration_data"]["file"] == BUILTIN_NAME


def test_search_with_calibration_data_measures_and_gates_invariance(
    tiny_checkpoint, calibration_file, tmp_path, monkeypatch
):
    import onnxpipe_export._int8_search as search
    from onnxpipe_export import export
    from onnxpipe_export._invariance import is_invariant

    # the full-range s8 recipe (the default before 7-bit weights) is faster on this CPU but can saturate on
    # AVX2-only ones: the search must measure it and never choose it
    saturating = "fused-attention-only-pc-s8-no-skipln"
    few = [saturating, "fused-static-percentile", "fused-attention-only-nb8-b32"]
    out = export(
        tiny_checkpoint("bert", "text-classification"),
        out=tmp_path / "m",
        precisions="int8",
        progress=False,
        validation_data=_labelled(tmp_path),
        calibration_data=calibration_file,
        int8_recipe="search",
        int8_candidates=few,
    )
    found = json.loads((out / "manifest.json").read_text())["variants"]["int8"]["recipe_search"]
    assert found["data"]["calibration"] == str(calibration_file)
    assert set(found["candidates"]) == {search.DEFAULT_INT8, *few}
    assert found["candidates"][saturating]["cannot_saturate"] is False
    assert found["candidates"][saturating]["gates_met"] is False and found["chosen"] != saturating
    assert found["candidates"][search.DEFAULT_INT8]["cannot_saturate"] is True
    for name, row in found["candidates"].items():
        inv = row["batch_invariance"]
        assert row["batch_invariant"] == is_invariant(inv)
        assert row["runs_alone"] == (row["recipe"]["method"] in ("dynamic", "fixed-scales"))  # the runtime's choice
        assert row["gates_met"] == (
            row["quality_gates_met"] and (row["batch_invariant"] or row["runs_alone"]) and row["cannot_saturate"]
        )
        if row["recipe"]["method"] != "dynamic":
            assert inv["max_score_change"] < 1e-5 and inv["label_flips"] == 0, name
    assert found["candidates"][saturating]["batch_invariance"]["max_score_change"] > 1e-4  # dynamic scales move


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"int8_recipe": "unfused-static-minmax"}, "is static: it calibrates .* Pass --calibration-data"),
        ({"calibration_data": "SAME"}, "are the same file"),
        ({"calibration_data": "missing.txt"}, "--calibration-data missing.txt: no such file"),
        ({"calibration_data": "EMPTY"}, "1 usable sentence"),
    ],
)
def test_calibration_mistakes_are_refused_before_any_work(tiny_checkpoint, tmp_path, kwargs, match):
    from onnxpipe.errors import ExportError
    from onnxpipe_export import export

    tsv = _labelled(tmp_path)
    if kwargs.get("calibration_data") == "SAME":
        kwargs["calibration_data"] = tsv
    elif kwargs.get("calibration_data") == "EMPTY":
        kwargs["calibration_data"] = tmp_path / "one.txt"
        kwargs["calibration_data"].write_text("just one sentence\n", encoding="utf-8")
    elif kwargs.get("calibration_data"):
        kwargs["calibration_data"] = tmp_path / kwargs["calibration_data"]
        match = match.replace("missing.txt", str(kwargs["calibration_data"]))
    with pytest.raises(ExportError, match=match):
        export(
            tiny_checkpoint("bert", "text-classification"),
            out=tmp_path / "m",
            precisions="int8",
            progress=False,
            validation_data=tsv,
            **kwargs,
        )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("label\tsentence\n1\ta fine film\n0\tdull\n", ["a fine film", "dull"]),  # SST-2 layout, header skipped
        (
            "first line\nsecond line\n\nthird\tline with a tab\n",
            ["first line", "second line", "third\tline with a tab"],
        ),
        ("a\nb\na\n", ["a", "b"]),  # duplicates calibrate once
    ],
)
def test_calibration_file_formats(tmp_path, text, expected, monkeypatch):
    import onnxpipe_export._calibrate as calibrate

    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(calibrate, "MIN_SENTENCES", 1)
    assert calibrate.read_calibration_texts(path) == expected
