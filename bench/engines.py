"""Engine adapters: each loads one engine on one model file and answers ``predict(texts) -> Prediction``.

Every engine is imported lazily inside its loader, so a worker process pays only for the engine it runs
(a torch import in an onnxruntime worker would skew its cold start and RSS). Classification engines return
label ids and the winning score; feature-extraction engines return mean-pooled, L2-normalised vectors, the
output fastembed and sentence-transformers give, so every engine does the same work per call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layout import VARIANT_FILES, optimum_int8_config

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Unavailable(Exception):
    """The engine cannot be installed or cannot load the local model; the message is the reason."""


@dataclass
class Spec:
    """One engine on one model variant. ``kind`` is its letter in the engine table of bench/README.md (a..f)."""

    name: str
    kind: str
    task: str  # "cls" (sentiment) or "fe" (sentence embeddings)
    precision: str
    loader: str  # key of LOADERS
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Engine:
    predict: Callable[[Sequence[str], int], Any]  # (texts, batch size) -> predictions
    versions: dict[str, str]
    provider: str
    # Optional: turn a request into the engine's pre-tokenized form outside the timed region (engine d only).
    prepare: Callable[[Sequence[str], int], Any] | None = None


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def _cached(folder: Path) -> Path:
    """A folder built by prepare.py, or Unavailable with the reason it could not be built."""
    if (folder / "FAILED.txt").is_file():
        raise Unavailable(
            f"prepare.py could not build {folder.name}: {(folder / 'FAILED.txt').read_text().splitlines()[0][:300]}"
        )
    if not folder.is_dir():
        raise Unavailable(f"{folder} missing (run bench/prepare.py)")
    return folder


def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[:, :, None].astype(np.float32)
    v = (hidden.astype(np.float32) * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def _pool_pipeline_output(pipe, tok, texts: Sequence[str], bs: int) -> np.ndarray:
    """Sentence embeddings from a transformers feature-extraction pipeline, pooled as sentence-transformers does.

    With batch_size > 1 the pipeline returns each text's hidden states still padded to its batch's longest
    text (the pad positions hold real numbers), so each is cut to the text's own token count first; pooling the
    pads skewed short texts' vectors (cosine 0.67 with the real embedding).
    """
    outs = pipe(list(texts), batch_size=bs, truncation=True, return_tensors=True)
    counts = [len(ids) for ids in tok(list(texts), truncation=True)["input_ids"]]
    return np.stack([_pool(np.asarray(o)[:, :n], np.ones((1, n)))[0] for o, n in zip(outs, counts)])


def _label_ids(results: list[dict], label2id: dict[str, int]) -> list[tuple[int, float]]:
    return [(label2id[r["label"]], float(r["score"])) for r in results]


# -- (a) transformers pipeline on PyTorch fp32 -------------------------------------------------------------
def load_transformers(spec: Spec, paths: dict[str, Path]) -> Engine:
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    src = str(paths["checkpoint"])
    if spec.task == "cls":
        pipe = transformers.pipeline("text-classification", model=src, device="cpu")
        label2id = pipe.model.config.label2id

        def predict(texts, bs):
            return _label_ids(pipe(list(texts), batch_size=bs, truncation=True), label2id)
    else:
        pipe = transformers.pipeline("feature-extraction", model=src, device="cpu")
        tok = pipe.tokenizer

        def predict(texts, bs):
            return _pool_pipeline_output(pipe, tok, texts, bs)

    return Engine(predict, {"torch": torch.__version__, "transformers": transformers.__version__}, "torch-cpu")


# -- (b) Optimum ORTModel inside a transformers pipeline ---------------------------------------------------
def load_optimum(spec: Spec, paths: dict[str, Path]) -> Engine:
    try:
        import transformers
        from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTModelForSequenceClassification
    except ImportError as e:
        raise Unavailable(f"optimum.onnxruntime not importable: {e}") from e
    recipe = spec.options.get("recipe")  # None: onnxpipe's own file; "O2"/"O3": Optimum's recipe, built by prepare.py
    if recipe is not None:
        folder = _cached(paths["cache"] / f"optimum-{spec.task}-{recipe}-{optimum_int8_config()}")
    else:
        folder = paths["model"]
    file_name = VARIANT_FILES[spec.precision] if recipe is None else "model_optimized_quantized.onnx"
    if not (folder / file_name).is_file():
        raise Unavailable(f"{folder / file_name} missing (run bench/prepare.py)")
    cls = ORTModelForSequenceClassification if spec.task == "cls" else ORTModelForFeatureExtraction
    sub, _, name = file_name.rpartition("/")
    model = cls.from_pretrained(str(folder), subfolder=sub, file_name=name, provider="CPUExecutionProvider")
    tok = transformers.AutoTokenizer.from_pretrained(str(paths["checkpoint"]))
    if spec.task == "cls":
        pipe = transformers.pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
        label2id = model.config.label2id

        def predict(texts, bs):
            return _label_ids(pipe(list(texts), batch_size=bs, truncation=True), label2id)
    else:
        pipe = transformers.pipeline("feature-extraction", model=model, tokenizer=tok, device="cpu")

        def predict(texts, bs):
            return _pool_pipeline_output(pipe, tok, texts, bs)

    import onnxruntime

    return Engine(
        predict,
        {
            "optimum-onnx": _version("optimum-onnx"),
            "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "CPUExecutionProvider",
    )


# -- (c) fastembed on the same ONNX file -------------------------------------------------------------------
def load_fastembed(spec: Spec, paths: dict[str, Path]) -> Engine:
    if spec.task != "fe":
        raise Unavailable("fastembed has no sequence-classification head")
    try:
        import fastembed
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType
    except ImportError as e:
        raise Unavailable(f"fastembed not importable: {e}") from e
    folder = _cached(paths["cache"] / f"fastembed-{spec.precision}")
    name = f"onnxpipe-bench/minilm-{spec.precision}"
    dim = json.loads((folder / "config.json").read_text())["hidden_size"]
    TextEmbedding.add_custom_model(
        model=name,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf="onnxpipe-bench/none"),
        dim=dim,
        model_file=VARIANT_FILES[spec.precision],
    )
    model = TextEmbedding(name, specific_model_path=str(folder), threads=THREADS, local_files_only=True)

    def predict(texts, bs):
        return np.stack(list(model.embed(list(texts), batch_size=bs)))

    import onnxruntime

    return Engine(
        predict, {"fastembed": fastembed.__version__, "onnxruntime": onnxruntime.__version__}, "CPUExecutionProvider"
    )


# -- (d) bare onnxruntime on pre-tokenized inputs ----------------------------------------------------------
def _hf_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length=512)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def _feeds(tok, texts: Sequence[str], names: Sequence[str]) -> dict[str, np.ndarray]:
    enc = tok.encode_batch(list(texts))
    full = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    return {n: full[n] for n in names}


def load_ort(spec: Spec, paths: dict[str, Path]) -> Engine:
    import onnxruntime as ort

    if spec.options.get("session") == "onnxpipe":
        # The very session onnxpipe builds (its options), run bare: the difference to (e) is onnxpipe's own work.
        from onnxpipe._manifest import load_manifest
        from onnxpipe._model import OnnxModel

        sess = OnnxModel(load_manifest(paths["model"], verify=False), precision=spec.precision).session
    else:
        path = paths["model"] / VARIANT_FILES[spec.precision]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # onnxruntime's defaults
    names = [i.name for i in sess.get_inputs()]
    out = "logits" if spec.task == "cls" else "last_hidden_state"
    tok = _hf_tokenizer(paths["model"])
    bare = _hf_tokenizer(paths["model"])
    bare.no_padding()

    def prepare(texts, bs):
        # Pre-tokenized and pre-padded outside the timed region; a request larger than the batch size is cut
        # into length-sorted batches, the best any caller of session.run can do.
        order = list(range(len(texts)))
        if len(texts) > bs:
            lengths = [len(e.ids) for e in bare.encode_batch(list(texts))]
            order.sort(key=lengths.__getitem__)
        return [_feeds(tok, [texts[i] for i in order[j : j + bs]], names) for j in range(0, len(order), bs)]

    def predict(batches, bs):
        ys = [sess.run([out], feeds)[0] for feeds in batches]
        if spec.task == "cls":
            # Raw logits as scores, no softmax: (d) is the floor. A request cut into sorted batches comes back
            # in sorted order (sst2-stream only, where no accuracy is read).
            return [(int(r.argmax()), float(r.max())) for y in ys for r in y]
        # Pooling is part of every feature-extraction engine's output, so the floor pools too.
        return np.concatenate([_pool(y, feeds["attention_mask"]) for y, feeds in zip(ys, batches)])

    return Engine(predict, {"onnxruntime": ort.__version__}, sess.get_providers()[0], prepare=prepare)


# -- (e) onnxpipe ------------------------------------------------------------------------------------------
def load_onnxpipe(spec: Spec, paths: dict[str, Path]) -> Engine:
    import onnxruntime

    import onnxpipe

    task = "text-classification" if spec.task == "cls" else "sentence-embeddings"
    pipe = onnxpipe.pipeline(
        task,
        model=str(paths["model"]),
        precision=spec.precision,
        batch_size=spec.options.get("batch_size", 128),
        verify=False,
        execution=spec.options.get("execution", "auto"),
    )
    if spec.task == "cls":
        label2id = {v: k for k, v in pipe.model.labels.items()}

        def predict(texts, bs):
            pipe.batch_size = bs
            return _label_ids(pipe(list(texts)), label2id)
    else:

        def predict(texts, bs):
            pipe.batch_size = bs
            return pipe(list(texts))

    return Engine(
        predict,
        {"onnxpipe": onnxpipe.__version__, "onnxruntime": onnxruntime.__version__},
        pipe.model.session.get_providers()[0],
    )


# -- (f) CTranslate2 and OpenVINO, each in its own venv (engine_venvs.py) ------------------------------------
def _softmax_rows(logits: np.ndarray) -> list[tuple[int, float]]:
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return list(zip(p.argmax(-1).tolist(), p.max(-1).tolist()))


def load_ctranslate2(spec: Spec, paths: dict[str, Path]) -> Engine:
    """CTranslate2's int8 encoder, fed token ids without padding (it takes ragged batches and would read pad ids
    as tokens). Classification: the checkpoint's own pooler (tanh dense on [CLS]) and classifier in numpy
    fp32, from head.npz written beside the converted encoder (CTranslate2 has no classification head)."""
    try:
        import ctranslate2
    except ImportError as e:
        raise Unavailable(f"ctranslate2 not importable: {e}") from e
    folder = _cached(paths["cache"] / f"ct2-{spec.task}-int8")
    threads = spec.options.get("threads", THREADS)
    enc = ctranslate2.Encoder(str(folder), device="cpu", compute_type="int8", intra_threads=threads)
    tok = _hf_tokenizer(paths["model"])
    tok.no_padding()
    head = dict(np.load(folder / "head.npz")) if spec.task == "cls" else {}

    def encode(texts):
        ids = [e.ids for e in tok.encode_batch(list(texts))] if len(texts) > 1 else [tok.encode(texts[0]).ids]
        return ids, np.asarray(enc.forward_batch(ids).last_hidden_state, dtype=np.float32)

    def predict(texts, bs):
        out: list = []
        for j in range(0, len(texts), bs):
            ids, hidden = encode(texts[j : j + bs])
            if spec.task == "cls":
                pooled = np.tanh(hidden[:, 0] @ head["pooler_w"].T + head["pooler_b"])
                out += _softmax_rows(pooled @ head["classifier_w"].T + head["classifier_b"])
            else:
                lengths = np.array([len(i) for i in ids])
                mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
                out.append(_pool(hidden, mask))
        return out if spec.task == "cls" else np.concatenate(out)

    versions = {"ctranslate2": ctranslate2.__version__, "intra_threads": str(threads)}
    return Engine(predict, versions, "ctranslate2-cpu-int8")


def load_openvino(spec: Spec, paths: dict[str, Path]) -> Engine:
    """OpenVINO reading onnxpipe's own ONNX file (``openvino.Core`` directly, no optimum-intel)."""
    try:
        import openvino as ov
    except ImportError as e:
        raise Unavailable(f"openvino not importable: {e}") from e
    path = paths["model"] / VARIANT_FILES[spec.precision]
    core = ov.Core()
    try:
        compiled = core.compile_model(
            core.read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"}
        )
    except Exception as e:  # OpenVINO raises RuntimeError for ops its ONNX frontend lacks
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise Unavailable(f"OpenVINO cannot compile {path.name}: {' '.join(lines[-2:])[:300]}") from e
    names = [i.get_any_name() for i in compiled.inputs]
    out = compiled.output("logits" if spec.task == "cls" else "last_hidden_state")
    request = compiled.create_infer_request()
    tok = _hf_tokenizer(paths["model"])

    def predict(texts, bs):
        results: list = []
        for j in range(0, len(texts), bs):
            feeds = _feeds(tok, texts[j : j + bs], names)
            y = request.infer(feeds)[out]
            if spec.task == "cls":
                results += _softmax_rows(y)
            else:
                results.append(_pool(y, feeds["attention_mask"]))
        return results if spec.task == "cls" else np.concatenate(results)

    hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return Engine(predict, {"openvino": ov.__version__, "inference_precision": hint}, "openvino-CPU")


def load_optimum_intel(spec: Spec, paths: dict[str, Path]) -> Engine:
    """OpenVINO as its users run a classifier: optimum-intel's ``OVModelForSequenceClassification`` (exported,
    and quantized with NNCF where asked, by prepare.py) inside a transformers pipeline, default OpenVINO
    configuration (the same wrapping as Optimum's engine b)."""
    if spec.task != "cls":
        raise Unavailable("only the sentiment task has an optimum-intel engine here")
    try:
        import openvino as ov
        import transformers
        from optimum.intel import OVModelForSequenceClassification
    except ImportError as e:
        raise Unavailable(f"optimum.intel not importable: {e}") from e
    folder = _cached(paths["cache"] / f"ov-{spec.options['ov']}")
    model = OVModelForSequenceClassification.from_pretrained(str(folder))
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tok, device="cpu")
    label2id = model.config.label2id

    def predict(texts, bs):
        return _label_ids(pipe(list(texts), batch_size=bs, truncation=True), label2id)

    model.compile()  # optimum-intel keeps the CompiledModel as model.request
    hint = str(model.request.get_property("INFERENCE_PRECISION_HINT"))
    return Engine(
        predict,
        {
            "openvino": ov.__version__,
            "optimum-intel": _version("optimum-intel"),
            "nncf": _version("nncf"),
            "transformers": transformers.__version__,
            "torch": _version("torch"),
            "inference_precision": hint,
            "ov_config": json.dumps(model.ov_config, sort_keys=True),
        },
        "openvino-CPU",
    )


LOADERS: dict[str, Callable[[Spec, dict[str, Path]], Engine]] = {
    "transformers": load_transformers,
    "optimum": load_optimum,
    "fastembed": load_fastembed,
    "ort": load_ort,
    "onnxpipe": load_onnxpipe,
    "ctranslate2": load_ctranslate2,
    "openvino": load_openvino,
    "optimum-intel": load_optimum_intel,
}
