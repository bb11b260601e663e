"""Reliability of the runtime library: bounded tokenizer memory whatever the arguments, empty batches,
NaN/inf outputs, numeric options, pickling.

A crash (SIGFPE on an empty batch, a hang on threads=5000) would take pytest down with it, so those cases run
in a child process. Runs on the embedded model (models/minilm-sst2, int8); tests marked ``torch`` build tiny
task folders or a hand-written ONNX graph.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, SessionOptions, pipeline
from onnxpipe._bench import bench
from onnxpipe._manifest import sha256_file
from onnxpipe._resolve import find_model
from onnxpipe._session import default_threads
from onnxpipe.errors import InferenceError, NonFiniteOutputError

EMBEDDED = find_model("minilm-sst2")
pytestmark = pytest.mark.skipif(EMBEDDED is None, reason="models/minilm-sst2 is not in this checkout")


def _child(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def classifier():
    return pipeline("sentiment-analysis")


@pytest.fixture(scope="module")
def tokenizer(classifier):
    return classifier.tokenizer


# -- item 2: one frozen tokenizer copy per truncation setting, bounded --------------------------------------------
_SETTINGS_CHILD = """
import json, re
from onnxpipe import AutoTokenizer
rss = lambda key: int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
tok = AutoTokenizer.from_pretrained("minilm-sst2")
text = "a long review of a film that goes on and on " * 40
tok(text, max_length=300, truncation=True)  # warm-up: the untruncated copy, allocator pools
before = rss("VmRSS")
for k in range(3, 43):  # what a server passing request arguments through sees: max_length=...
    assert len(tok(text, max_length=k, truncation=True)["input_ids"]) == k
for k in range(40):  # question-answering windows: doc_stride x max_seq_len
    tok.encode_batch(["why?"], [text], max_length=64 + k, stride=k, strategy="only_second")
for k in range(40):  # token-classification windows: stride
    tok.encode_batch([text], stride=k + 1)
print(json.dumps({"before": before, "after": rss("VmRSS"), "peak": rss("VmHWM")}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RSS from /proc/self/status")
def test_many_distinct_truncation_settings_keep_memory_bounded():
    """120 distinct settings were 120 tokenizer copies (~6 MiB each, +700 MiB); now at most a few are kept."""
    proc = _child(_SETTINGS_CHILD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["after"] - r["before"] < 120, r


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"max_length": 0}, "max_length=0"),  # meant the model maximum
        ({"max_length": -1}, "max_length=-1"),  # OverflowError from Rust
        ({"max_length": True}, "max_length=True"),
        ({"max_length": 8.0}, "max_length=8.0"),
        ({"max_length": "8"}, "max_length='8'"),
        ({"max_length": 1}, "max_length=1"),  # below the 2 special tokens the Rust tokenizer did not truncate at all
    ],
)
def test_tokenizer_max_length_must_be_a_usable_int(tokenizer, kwargs, name):
    with pytest.raises(ValueError, match=rf"{name} .*use an int (>=|from)"):
        tokenizer(["some text here"], truncation=True, **kwargs)


@pytest.mark.parametrize("stride,max_length", [(-1, 16), (True, 16), (2.0, 16), (14, 16), (600, None)])
def test_tokenizer_stride_must_fit_its_window(tokenizer, stride, max_length):
    with pytest.raises(ValueError, match=rf"stride={stride!r} .*use an int from 0 to"):
        tokenizer.encode_batch(["some text " * 100], max_length=max_length, stride=stride)


def test_a_valid_stride_still_windows(tokenizer):
    (e,) = tokenizer.encode_batch(["word " * 100], max_length=16, stride=13)
    assert len(e.ids) == 16 and e.overflowing


QA = {"question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin. " * 20}


@pytest.mark.torch
@pytest.mark.parametrize(
    "task,kwargs,message",
    [
        ("question-answering", {"max_seq_len": 0}, r"max_seq_len=0 \(int\); use an int >= "),  # meant the maximum
        ("question-answering", {"max_seq_len": -5}, r"max_seq_len=-5 "),
        ("question-answering", {"max_seq_len": True}, r"max_seq_len=True \(bool\)"),
        ("question-answering", {"doc_stride": -1}, r"doc_stride=-1 \(int\); use an int from 0 to "),
        ("question-answering", {"doc_stride": 2.0}, r"doc_stride=2.0 \(float\)"),
        ("question-answering", {"max_seq_len": 32, "doc_stride": 28}, r"doc_stride=28 .*from 0 to 27"),  # a panic
        ("question-answering", {"top_k": True}, r"top_k=True \(bool\)"),
        ("token-classification", {"stride": True, "aggregation_strategy": "simple"}, r"stride=True \(bool\)"),
        ("token-classification", {"stride": -1, "aggregation_strategy": "simple"}, r"stride=-1 .*from 0 to 125"),
    ],
)
def test_window_options_are_checked_ints(tiny_export, task, kwargs, message):
    pipe = pipeline(task, model=tiny_export("bert", task))
    with pytest.raises(ValueError, match=message):
        pipe(QA, **kwargs) if task == "question-answering" else pipe("Wolfgang lives in Berlin", **kwargs)


@pytest.mark.torch
def test_a_question_too_long_for_the_stride_is_a_value_error_not_a_panic(tiny_export):
    qa = pipeline("question-answering", model=tiny_export("bert", "question-answering"))
    long_question = {"question": "where " * 20, "context": QA["context"]}
    with pytest.raises(ValueError, match=r"inputs 0..0: .*lower doc_stride"):
        qa(long_question, max_seq_len=32, doc_stride=10)


@pytest.mark.torch
def test_many_distinct_window_settings_keep_few_tokenizer_copies(tiny_export):
    qa = pipeline("question-answering", model=tiny_export("bert", "question-answering"))
    for k in range(30):
        qa(QA, max_seq_len=40 + k, doc_stride=k % 20)
    assert len(qa.tokenizer._encoder._recent) <= 8  # 30 settings, 30 copies kept before


# -- item 3: an empty batch never reaches onnxruntime --------------------------------------------------------------
_EMPTY_CHILD = """
import json, sys
from onnxpipe import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline
out = {}
tok = AutoTokenizer.from_pretrained("minilm-sst2")
enc = tok([], padding=True, return_tensors="np")
out["tokenizer"] = {k: list(v.shape) for k, v in enc.items()}
out["tokenizer_lists"] = tok([], padding=True)["input_ids"]
for cls in (AutoModelForSequenceClassification, AutoModel):
    for precision in ("int8",):
        result = cls.from_pretrained("minilm-sst2", precision=precision)(**enc)
        out[cls.__name__] = {k: list(v.shape) for k, v in result.items()}
for task in ("sentiment-analysis", "feature-extraction", "sentence-embeddings"):
    r = pipeline(task, model="minilm-sst2")([])
    out[task] = list(r.shape) if hasattr(r, "shape") else r
for task, folder in zip(sys.argv[1::2], sys.argv[2::2]):
    pipe = pipeline(task, model=folder)
    try:
        out[task] = pipe([], candidate_labels=["a"]) if task == "zero-shot-classification" else pipe([])
    except ValueError as e:
        out[task] = "ValueError: " + str(e)
print(json.dumps(out))
"""


def _empty_results(*folders: str) -> dict:
    proc = _child(_EMPTY_CHILD, *folders)
    assert proc.returncode == 0, f"exit {proc.returncode} (136 = SIGFPE): {proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_empty_batch_gives_empty_results_on_the_embedded_model():
    r = _empty_results()
    assert r["tokenizer"] == {"input_ids": [0, 0], "attention_mask": [0, 0], "token_type_ids": [0, 0]}
    assert r["tokenizer_lists"] == []
    assert r["AutoModelForSequenceClassification"] == {"logits": [0, 2]}  # (rows, labels)
    assert r["AutoModel"] == {"last_hidden_state": [0, 0, 384]}  # (rows, tokens, hidden)
    assert r["sentiment-analysis"] == [] and r["feature-extraction"] == []
    assert r["sentence-embeddings"] == [0, 384]


@pytest.mark.torch
def test_an_empty_batch_gives_empty_results_on_every_other_pipeline(tiny_export):
    tasks = ["fill-mask", "token-classification", "question-answering", "zero-shot-classification"]
    r = _empty_results(*[x for t in tasks for x in (t, tiny_export("bert", t))])
    assert r["fill-mask"] == r["token-classification"] == r["question-answering"] == []
    # transformers' own message: zero-shot needs at least one sequence
    assert r["zero-shot-classification"].startswith("ValueError: You must include at least one")


def test_zero_length_rows_are_refused_before_onnxruntime():
    model = AutoModelForSequenceClassification.from_pretrained("minilm-sst2")
    with pytest.raises(ValueError, match=r"input_ids has shape \(2, 0\): every row needs at least one token"):
        model(input_ids=np.zeros((2, 0), dtype=np.int64))


def test_empty_outputs_take_the_width_of_the_input():
    model = AutoModel.from_pretrained("minilm-sst2")
    assert model(input_ids=np.zeros((0, 7), dtype=np.int64)).last_hidden_state.shape == (0, 7, 384)


def test_bench_refuses_a_batch_size_of_zero_naming_the_flag():
    proc = _child(
        "from onnxpipe._cli import main; raise SystemExit(main(['bench', 'minilm-sst2', '--runs', '1', "
        "'--warmup', '0', '--batch-sizes', '0', '--seq-lengths', '8']))"
    )
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "--batch-sizes" in proc.stderr and "=0" in proc.stderr


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"batch_sizes": [1, -2]}, "--batch-sizes"),
        ({"batch_sizes": [2.5]}, "--batch-sizes"),
        ({"seq_lengths": [True]}, "--seq-lengths"),
        ({"runs": 0}, "--runs"),
        ({"options": SessionOptions(threads=0)}, "threads"),
    ],
)
def test_bench_refuses_bad_numbers_before_loading(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        bench("minilm-sst2", **kwargs)


# -- item 4: NaN and inf are errors, not predictions ---------------------------------------------------------------
def _non_finite_graph(path: Path, bad_id: int) -> None:
    """logits = [x, 1 / (x - bad_id)] for x = the second token id: inf for the rows whose first word is bad_id."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch_size", "sequence_length"]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, dims)
        for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 2])

    def const(name, value, dtype=TensorProto.INT64):
        return helper.make_tensor(name, dtype, [len(value)], value)

    nodes = [
        helper.make_node("Slice", ["input_ids", "one", "two", "one"], ["word"]),  # (batch, 1): the first word
        helper.make_node("Cast", ["word"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["x", "bad"], ["d"]),
        helper.make_node("Div", ["onef", "d"], ["inv"]),
        helper.make_node("Concat", ["x", "inv"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "non_finite",
        inputs,
        [output],
        initializer=[
            const("one", [1]),
            const("two", [2]),
            const("bad", [float(bad_id)], TensorProto.FLOAT),
            const("onef", [1.0], TensorProto.FLOAT),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def non_finite_folder(tmp_path_factory, tokenizer) -> tuple[Path, int]:
    folder = Path(shutil.copytree(EMBEDDED, tmp_path_factory.mktemp("nan") / "minilm-inf"))
    rel = "onnx/model_quantized.onnx"
    bad_id = tokenizer.backend.token_to_id("terrible")
    _non_finite_graph(folder / rel, bad_id)
    data = json.loads((folder / "manifest.json").read_text())
    data["files"][rel] = {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
    data["outputs"] = ["logits"]
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))
    return folder, bad_id


@pytest.mark.torch
def test_a_model_call_with_inf_names_folder_precision_output_and_row(non_finite_folder, tokenizer):
    folder, _ = non_finite_folder
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    inputs = tokenizer(["fine film", "terrible film", "nice"], padding=True, return_tensors="np")
    with pytest.raises(
        NonFiniteOutputError,
        match=r"minilm-inf \(int8, cpu\) computed NaN or inf in output "
        r"'logits' for batch row 1;",
    ) as info:
        model(**inputs)
    assert isinstance(info.value, InferenceError) and info.value.rows == [1] and info.value.output == "logits"
    assert model(**tokenizer(["fine film"], return_tensors="np")).logits.shape == (1, 2)  # finite rows pass


@pytest.mark.torch
@pytest.mark.parametrize(
    "texts,named",
    [
        (["terrible"], "input 0;"),
        # length-sorted batching reorders rows: the error names the caller's indices, across chunks too
        (["a much longer and fine text here", "ok", "terrible film", "good", "terrible"], "inputs [2, 4];"),
    ],
)
def test_a_pipeline_with_inf_names_the_callers_inputs(non_finite_folder, texts, named):
    folder, _ = non_finite_folder
    pipe = pipeline("text-classification", model=folder)
    with pytest.raises(NonFiniteOutputError, match="output 'logits' for " + re.escape(named)):
        pipe(texts)
    small = type(pipe)(pipe.model, pipe.tokenizer, chunk_size=2)
    with pytest.raises(NonFiniteOutputError) as info:
        small(texts)
    # chunks of 2: the first failing chunk is reported, by its index in the whole input, not in the chunk
    assert info.value.rows == [i for i, t in enumerate(texts) if t.startswith("terrible")][:1]


# -- item 7: numeric options --------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [-1, 0, True, 2.5, "4", 4 * default_threads() + 1])
@pytest.mark.parametrize("entry", ["pipeline", "from_pretrained"])
def test_threads_outside_the_machine_are_refused_with_the_range(entry, threads):
    load = (
        (lambda: pipeline("sentiment-analysis", threads=threads))
        if entry == "pipeline"
        else (lambda: AutoModel.from_pretrained("minilm-sst2", threads=threads))
    )
    with pytest.raises(ValueError, match=rf"threads={threads!r} .*use an int from 1 to {4 * default_threads()}"):
        load()


def test_threads_5000_fails_fast_instead_of_hanging():
    proc = _child("from onnxpipe import pipeline\npipeline('sentiment-analysis', threads=5000)", timeout=120)
    assert proc.returncode == 1 and "ValueError: threads=5000" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["batch_size", "max_batch_tokens"])
@pytest.mark.parametrize("value", [0, -3, True, 2.5, "8", None])
def test_batch_options_must_be_positive_ints(name, value):
    with pytest.raises(ValueError, match=rf"{name}={value!r} \({type(value).__name__}\); use an int >= 1"):
        pipeline("sentiment-analysis", **{name: value})


# -- item 10: pickling ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("what", ["pipeline", "model"])
def test_pickling_a_session_holder_says_what_to_do_instead(classifier, what):
    obj = classifier if what == "pipeline" else classifier.model
    with pytest.raises(TypeError, match=r"cannot be pickled: it holds an onnxruntime session.*initializer.*Ray"):
        pickle.dumps(obj)


def test_a_tokenizer_pickles_and_encodes_the_same(tokenizer):
    tokenizer(["warm"], max_length=5, truncation=True)  # a cached copy must not travel
    copy = pickle.loads(pickle.dumps(tokenizer))
    texts = ["I hate this so much!", "a b c d e f g h i j k l"]
    for kwargs in ({}, {"max_length": 6, "truncation": True}):
        assert copy(texts, padding=True, **kwargs) == tokenizer(texts, padding=True, **kwargs)
    assert copy.model_max_length == tokenizer.model_max_length


def test_a_tokenizer_with_a_new_maximum_truncates_there_after_pickling():
    # The unpickled copy filed the base tokenizer (cutting at the exported 512) under the new maximum, so it cut
    # at 512: 102 tokens here instead of 16.
    tokenizer = AutoTokenizer.from_pretrained("minilm-sst2")
    tokenizer.model_max_length = 16
    copy = pickle.loads(pickle.dumps(tokenizer))
    text = "word " * 100
    assert [len(t.encode_batch([text])[0].ids) for t in (tokenizer, copy)] == [16, 16]
    assert copy([text], truncation=True)["input_ids"] == tokenizer([text], truncation=True)["input_ids"]
