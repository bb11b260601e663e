"""Encoder-decoders (T5, BART, Marian): the export's folder, generation token-identical to transformers'
``model.generate`` (greedy, beam search with its settings, padded batches), the pipelines equal to transformers'
pipelines, hostile arguments, and generation with only the runtime importable.

Tiny random models repeat tokens a lot; the beam table is built so that a beam search that were greedy in
disguise, or that ignored a setting, fails: ``test_the_beam_table_is_not_greedy`` checks that the settings
change the tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxpipe import errors, pipeline
from onnxpipe._beam import beam_search
from onnxpipe._manifest import load_manifest
from onnxpipe._model import OnnxModel
from onnxpipe._seq2seq import Seq2SeqModel, sample_or_greedy
from onnxpipe._seq2seq_config import merged_config, resolve

pytestmark = pytest.mark.torch  # the folders are exported in this session

ARCHS = ["t5", "bart", "marian"]
HEAD = "text2text-generation"
# The int8 variant is made by architecture-independent code (_seq2seq._write_graphs: the same dynamic int8 quantizer
# on the encoder and each decoder, then the same merge; validated by the same loop as fp32), so one architecture
# carries it here: T5, the one the serve tests ask for int8 too. The others export fp32 only (a third less work).
INT8_ARCHS = ("t5",)
TEXTS = [
    "The film was great!",
    "Das Essen war ausgezeichnet, aber laut.",
    "OK.",
    "What time does the train to Edinburgh leave on Sunday morning?",
    "",
]
# Each row a generate() configuration; max_new_tokens bounds the tiny models' endless repeats.
CONFIGS = {
    "greedy": {"num_beams": 1, "max_new_tokens": 12},
    "beam4": {"num_beams": 4, "max_new_tokens": 12},
    "beam3-lp2-early": {"num_beams": 3, "length_penalty": 2.0, "early_stopping": True, "max_new_tokens": 10},
    "beam4-lp-neg-never": {"num_beams": 4, "length_penalty": -0.5, "early_stopping": "never", "max_new_tokens": 9},
    "beam4-ngram2-n3": {"num_beams": 4, "no_repeat_ngram_size": 2, "num_return_sequences": 3, "max_new_tokens": 12},
    "beam2-min-new": {"num_beams": 2, "min_new_tokens": 6, "max_new_tokens": 8},
    "greedy-ngram1-rep": {"num_beams": 1, "no_repeat_ngram_size": 1, "repetition_penalty": 1.3, "max_new_tokens": 10},
    "beam3-max-length": {"num_beams": 3, "max_length": 7, "max_new_tokens": None},
}


@pytest.fixture(scope="module")
def folders(tiny_export):
    return {a: tiny_export(a, HEAD, precisions="int8,fp32" if a in INT8_ARCHS else "fp32") for a in ARCHS}


@pytest.fixture(scope="module")
def references(tiny_checkpoint):
    """The transformers model and tokenizer of each tiny checkpoint."""
    import transformers

    transformers.logging.set_verbosity_error()
    out = {}
    for a in ARCHS:
        path = tiny_checkpoint(a, HEAD)
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
        out[a] = (model, transformers.AutoTokenizer.from_pretrained(path), path)
    return out


@pytest.fixture(scope="module")
def runtimes(folders):
    return {a: Seq2SeqModel(OnnxModel(load_manifest(f), precision="fp32")) for a, f in folders.items()}


def _trim(row, eos):
    out = []
    for t in row:
        out.append(int(t))
        if int(t) in eos:
            break
    return out


def _ours(s2s, enc, call):
    g = s2s.encoder.manifest.generation
    ids = {k: g.get(k) for k in ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id")}
    s = resolve(merged_config(g["config"], None, {}, call, pipeline_defaults={}), ids)
    ids_, mask = np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"])
    hidden = s2s.encode(ids_, mask)
    if s.num_beams > 1:
        return [seq for seqs in beam_search(s2s, hidden, mask, s) for seq in seqs]
    return sample_or_greedy(s2s, hidden, mask, s)


def _theirs(model, tokenizer, texts, call):
    import torch

    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, **{k: v for k, v in call.items() if v is not None})
    eos = set(np.atleast_1d(model.generation_config.eos_token_id).tolist())
    return [_trim(row[1:], eos) for row in out.tolist()], {k: v.numpy() for k, v in enc.items()}


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_generation_is_token_identical_to_transformers(arch, config, references, runtimes):
    model, tokenizer, _ = references[arch]
    call = CONFIGS[config]
    for texts in [[t] for t in TEXTS[:3]] + [TEXTS]:  # single inputs, then one padded batch of all
        expected, enc = _theirs(model, tokenizer, texts, call)
        assert _ours(runtimes[arch], enc, {**call, "do_sample": False}) == expected, (arch, config, texts)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_beam_table_is_not_greedy(arch, references):
    """Token identity would prove little if every setting gave the same tokens: beam search differs from greedy
    on some input, and the settings of the table change the beams."""
    model, tokenizer, _ = references[arch]
    outputs = {name: _theirs(model, tokenizer, TEXTS, call)[0] for name, call in CONFIGS.items()}
    assert outputs["beam4"] != outputs["greedy"]
    beams = [json.dumps(v) for k, v in outputs.items() if k.startswith("beam")]
    assert len(set(beams)) >= 4, "the beam settings should lead to different tokens"


@pytest.mark.parametrize("arch", ARCHS)
def test_export_writes_an_optimum_style_folder_validated_against_generate(arch, folders):
    folder = folders[arch]
    manifest = load_manifest(folder)
    assert manifest.format_version == "1.3" and manifest.tasks == [HEAD]
    assert manifest.variants["fp32"].file == "onnx/encoder_model.onnx"
    assert manifest.variants["fp32"].decoder == "onnx/decoder_model_merged.onnx"
    assert set(manifest.variants) == ({"int8", "fp32"} if arch in INT8_ARCHS else {"fp32"})
    if arch in INT8_ARCHS:
        assert manifest.variants["int8"].decoder == "onnx/decoder_model_merged_quantized.onnx"
        assert manifest.variants["int8"].file == "onnx/encoder_model_quantized.onnx"
    v = manifest.variants["fp32"].validation
    assert (
        v["max_abs_encoder_diff"] < 1e-4
        and v["generations_identical"].split("/")[0] == v["generations_identical"].split("/")[1]
    )
    g = manifest.generation
    assert {"decoder_start_token_id", "eos_token_id", "decoder_inputs", "task_params"} <= set(g)
    assert "use_cache_branch" in g["decoder_inputs"]
    if arch == "t5":
        assert g["task_params"]["summarization"]["prefix"] == "summarize: "
    if arch == "marian":
        assert g["config"]["bad_words_ids"] == [[2]] and g["decoder_start_token_id"] == 2


@pytest.mark.parametrize("arch", ARCHS)
def test_the_cached_step_runs_one_fused_attention_per_attention(arch, folders, references):
    """Every self- and cross-attention of the with-past branch is one MultiHeadAttention (the first step's
    branch stays as traced), and the manifest says how many; token identity with transformers is the tests
    above, run on these fused graphs."""
    import onnx

    layers = (
        references[arch][0].config.decoder_layers if arch != "t5" else references[arch][0].config.num_decoder_layers
    )
    manifest = load_manifest(folders[arch])
    for precision, variant in manifest.variants.items():
        graph = onnx.load(str(folders[arch] / variant.decoder), load_external_data=False).graph
        (branch,) = [n for n in graph.node if n.op_type == "If"]
        counts = {a.name: sum(n.op_type == "MultiHeadAttention" for n in a.g.node) for a in branch.attribute}
        assert counts == {"then_branch": 2 * layers, "else_branch": 0}, (precision, counts)  # then: use_cache_branch
        assert variant.fused_operators == {"MultiHeadAttention": 2 * layers}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_folder_tokenizer_loads_in_transformers_as_the_runtime_reads_it(arch, folders):
    """tokenizer_config.json and special_tokens_map.json are in the folder (transformers.js reads the tokenizer
    through them), truncating where the manifest says."""
    from transformers import AutoTokenizer

    folder = folders[arch]
    theirs = AutoTokenizer.from_pretrained(str(folder))
    assert theirs.model_max_length == load_manifest(folder).max_length
    assert "eos_token" in json.loads((folder / "special_tokens_map.json").read_text())
    ours = pipeline(HEAD, model=folder).tokenizer
    for text in TEXTS:
        assert theirs(text)["input_ids"] == list(ours.encode_batch([text])[0].ids), text


PIPELINE_CASES = [
    ("t5", "text2text-generation", {}),
    ("t5", "summarization", {}),  # task_specific_params: prefix, 4 beams, no-repeat 3, length penalty 2
    ("t5", "translation_en_to_de", {}),  # the model's max_length beats the task's max_length=20 (the default)
    ("t5", "translation_en_to_de", {"num_beams": 1}),
    ("bart", "summarization", {}),  # forced BOS and EOS, no-repeat 3
    ("bart", "summarization", {"num_beams": 3, "num_return_sequences": 2}),
    ("bart", "text2text-generation", {"max_new_tokens": 5, "min_length": 4}),
    ("marian", "translation", {}),  # bad_words_ids bans the pad token; 3 beams from its config
    ("marian", "translation", {"max_new_tokens": 6, "return_tensors": True}),
]


@pytest.mark.parametrize(("arch", "task", "kwargs"), PIPELINE_CASES)
def test_pipeline_output_equals_transformers_pipeline(arch, task, kwargs, folders, references):
    import transformers

    ours = pipeline(task, model=folders[arch], precision="fp32")
    theirs = transformers.pipeline(task, model=str(references[arch][2]))
    got, expected = ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs)
    if kwargs.get("return_tensors"):  # transformers' token ids are tensors
        expected = [{k: [int(t) for t in v] for k, v in e.items()} for e in expected]
    else:
        assert ours(TEXTS[0], **kwargs) == theirs(TEXTS[0], **kwargs)
    assert got == expected


def test_output_keys_follow_the_task(folders):
    text = "The film was great!"
    for task, key in [("summarization", "summary_text"), ("translation", "translation_text")]:
        assert list(pipeline(task, model=folders["bart"])(text, max_new_tokens=3)[0]) == [key]
    assert list(pipeline(HEAD, model=folders["bart"])(text, max_new_tokens=3)[0]) == ["generated_text"]


def test_int8_variant_generates(folders):
    out = pipeline("summarization", model=folders["t5"], precision="int8")(TEXTS[:2], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(o["summary_text"], str) for o in out)


def _gather_tables(graph, inits=None):
    """(name, ONNX data type, rows) of every initializer a Gather reads, the If branches' Gathers included."""
    inits = {**(inits or {}), **{i.name: i for i in graph.initializer}}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            t = inits[node.input[0]]
            yield t.name, t.data_type, t.dims[0]
        for attr in node.attribute:
            if attr.g.node:
                yield from _gather_tables(attr.g, inits)


@pytest.mark.parametrize("graph", ["file", "decoder"])
def test_int8_stores_the_token_embedding_in_u8_and_other_tables_in_fp32(folders, graph):
    import onnx

    manifest = load_manifest(folders["t5"])
    variant = manifest.variants["int8"]
    vocab = manifest.generation["vocab_size"]
    assert "Gather" in variant.recipe["op_types"] and variant.recipe["gather_rows"] == vocab
    model = onnx.load(str(manifest.folder / getattr(variant, graph)))
    tables = {(dtype, rows == vocab) for _, dtype, rows in _gather_tables(model.graph)}
    # the embedding as u8 (the quantizer's Gather tables are u8 whatever the weights' type); T5's relative-position
    # buckets (a few rows) as fp32
    assert tables == {(onnx.TensorProto.UINT8, True), (onnx.TensorProto.FLOAT, False)}


def test_seeded_sampling_repeats_and_differs_from_greedy(folders):
    pipe = pipeline(HEAD, model=folders["t5"], precision="fp32")
    a = pipe(TEXTS[:2], do_sample=True, seed=3, num_beams=1, max_new_tokens=8)
    assert a == pipe(TEXTS[:2], do_sample=True, seed=3, num_beams=1, max_new_tokens=8)
    assert a != pipe(TEXTS[:2], do_sample=False, num_beams=1, max_new_tokens=8)


HOSTILE = [
    ({"num_beams": 0}, "num_beams"),  # transformers: ZeroDivisionError
    ({"max_new_tokens": 0}, "max_new_tokens"),  # transformers: ValueError
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"max_length": 1, "max_new_tokens": None}, "max_length"),
    ({"early_stopping": "x"}, "early_stopping"),
    ({"do_sample": True, "num_beams": 2}, "beam sampling"),
]


@pytest.mark.parametrize(("kwargs", "named"), HOSTILE)
def test_hostile_arguments_raise_a_typed_error_naming_them(kwargs, named, folders):
    pipe = pipeline("summarization", model=folders["bart"], precision="fp32")
    with pytest.raises(errors.GenerationArgumentError, match=named):
        pipe("hello world", **kwargs)


def test_unknown_argument_is_a_type_error(folders):
    with pytest.raises(TypeError, match="top_kk"):
        pipeline("summarization", model=folders["bart"])("hello", top_kk=3)


def test_an_input_past_the_encoder_limit_is_refused_or_truncated_as_asked(folders, references):
    import transformers

    long_text = "word " * 300
    pipe = pipeline("summarization", model=folders["bart"], precision="fp32")
    with pytest.raises(errors.InputTooLongError, match="truncation=True"):  # transformers: IndexError
        pipe(long_text)
    theirs = transformers.pipeline("summarization", model=str(references["bart"][2]))
    assert pipe(long_text, truncation=True, max_new_tokens=5) == theirs(long_text, truncation=True, max_new_tokens=5)


_RUNTIME_ONLY = """
import importlib.abc, json, sys
FORBIDDEN = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, Block())
from onnxpipe import pipeline
out = {}
for task in ("summarization", "translation", "text2text-generation"):
    pipe = pipeline(task, model=sys.argv[2], precision="fp32")
    out[task] = pipe(["The film was great!", "OK."], num_beams=3, max_new_tokens=6)
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print(json.dumps(out))
"""


def test_generation_runs_with_the_export_stack_unimportable(folders):
    import subprocess
    import sys

    from test_no_torch_import import FORBIDDEN

    proc = subprocess.run(
        [sys.executable, "-c", _RUNTIME_ONLY, json.dumps(FORBIDDEN), str(folders["t5"])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("loaded") == []
    for task, results in out.items():
        expected = pipeline(task, model=folders["t5"], precision="fp32")(
            ["The film was great!", "OK."], num_beams=3, max_new_tokens=6
        )
        assert results == expected


def test_batch_writes_the_summaries_the_pipeline_gives(folders, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from onnxpipe._batch_job import run_batch

    (tmp_path / "in.txt").write_text("\n".join(TEXTS[:4]) + "\n", encoding="utf-8")
    run_batch(folders["t5"], tmp_path / "in.txt", tmp_path / "out.parquet", task="summarization", precision="fp32")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    want = pipeline("summarization", model=folders["t5"], precision="fp32")(TEXTS[:4])
    assert [r["summary_text"] for r in rows] == [w["summary_text"] for w in want]
