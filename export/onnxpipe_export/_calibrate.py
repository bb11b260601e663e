"""Static (calibrated) int8: activation ranges measured once on sample sentences, then fixed in the file.

With fixed scales every row of a batch is quantized alike, so a text's result does not depend on its
batch-mates, at the price of ranges that must suit every input. The sample comes from
``--calibration-data`` (sentences of the task: SST-2 train for sentiment), never from the validation data.
onnxruntime's histogram calibrators (percentile, entropy) stack each call's outputs, so one call holds batches
of one shape: here each batch is its own call and the calibrator merges ranges and histograms across calls.
The calibrator and the quantizer only see tensors whose type is known: onnx's shape inference stops at the fused
graph's contrib ops (SkipLayerNormalization, Attention), and without onnxruntime's symbolic shape inference
first they would quantize the weights alone (fp32 MatMuls behind a DequantizeLinear). The recipe counts the
MatMuls whose both inputs are quantized, and an export where none is fails.

    >>> calib = Calibration.from_file("../shared/data/sst2/train.tsv", hf_tokenizer)
    >>> quantize_static_int8(Path("unfused.onnx"), Path("q.onnx"), recipe_named("fused-static-minmax"), calib)
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxpipe.errors import ExportError

SEED = 0  # the sample is the same in every export of the same file
# General English sentences written for this package (news, reviews, questions, instructions; 5-20 words), for
# recipes that fix activation scales when no --calibration-data is given: the default int8 recipe must export
# any checkpoint with no data at hand. Measured on minilm-sst2 and all-MiniLM-L6-v2: SST-2 dev and STS-B dev
# within 0.1 point of fp32 calibrated on these (bench/results/int8_cpu.md).
BUILTIN = Path(__file__).with_name("calibration_en.txt")
BUILTIN_NAME = "built-in English sentences (onnxpipe_export/calibration_en.txt)"
MIN_SENTENCES = 8
BATCH = 16  # sentences per calibration batch with fixed padding
_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def read_calibration_texts(path: Any) -> list[str]:
    """``label<TAB>text`` rows after a header line (the SST-2 layout, as --validation-data), or one sentence per
    line. A file is read as labelled when every row after the first is an integer, a tab and a text."""
    with open(path, encoding="utf-8", newline="") as f:
        lines = [line.rstrip("\r\n") for line in f]
    rows = [line.split("\t") for line in lines[1:] if line.strip()]
    labelled = bool(rows) and all(len(r) == 2 and r[0].strip().lstrip("-").isdigit() for r in rows)
    texts = [r[1] for r in rows] if labelled else [line for line in lines if line.strip()]
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    if len(texts) < MIN_SENTENCES:
        raise ExportError(
            f"--calibration-data {path}: {len(texts)} usable sentence(s); calibration needs at least {MIN_SENTENCES} "
            "(label<TAB>text rows after a header line, or one sentence per line), ideally hundreds"
        )
    return texts


@dataclass(frozen=True)
class Calibration:
    """Calibration sentences and the checkpoint's tokenizer (transformers'), to feed the fp32 graph."""

    file: str
    texts: list[str]
    tokenizer: Any
    max_length: int

    @classmethod
    def from_file(cls, path: Any, tokenizer: Any, max_length: int, exclude: Any = ()) -> Calibration:
        """The file's sentences minus any in ``exclude`` (the validation texts: never calibrate on those)."""
        excluded = set(exclude)
        texts = [t for t in read_calibration_texts(path) if t not in excluded]
        return cls(str(path), texts, tokenizer, max_length)

    @classmethod
    def builtin(cls, tokenizer: Any, max_length: int) -> Calibration:
        """The package's own sentences (BUILTIN), for recipes that fix activation scales without task data."""
        return cls(BUILTIN_NAME, read_calibration_texts(BUILTIN), tokenizer, max_length)

    @property
    def is_builtin(self) -> bool:
        return self.file == BUILTIN_NAME

    def sample(self, n: int) -> list[str]:
        rng = np.random.default_rng(SEED)
        picked = rng.choice(len(self.texts), size=min(n, len(self.texts)), replace=False)
        return [self.texts[i] for i in sorted(picked)]

    def batches(self, recipe: dict[str, Any], graph_inputs: list[str]) -> tuple[list[dict[str, np.ndarray]], int]:
        """The feeds to calibrate ``recipe`` with, and the padded length (0: each sentence alone, unpadded)."""
        texts = self.sample(int(recipe["calibration_sentences"]))

        def encode(chunk: list[str], length: int | None = None) -> dict[str, np.ndarray]:
            pad: dict[str, Any] = {"padding": "max_length"} if length else {}
            enc = self.tokenizer(
                chunk, truncation=True, max_length=length or self.max_length, return_tensors="np", **pad
            )
            feeds = {k: np.asarray(enc[k], dtype=np.int64) for k in graph_inputs if k in enc}
            if "token_type_ids" in graph_inputs and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            return feeds

        if recipe["calibration_padding"] == "none":
            return [encode([t]) for t in texts], 0
        if recipe["calibration_padding"] != "fixed":
            raise ExportError(f"calibration_padding {recipe['calibration_padding']!r}; valid: fixed, none")
        length = max(
            len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        )
        return [encode(texts[i : i + BATCH], length) for i in range(0, len(texts), BATCH)], length


class _One:
    """A CalibrationDataReader over one batch: each batch is its own collect_data call (see module doc)."""

    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        self.feeds: dict[str, np.ndarray] | None = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        feeds, self.feeds = self.feeds, None
        return feeds


def quantize_static_int8(
    source: Path, out: Path, recipe: dict[str, Any], calibration: Calibration | None
) -> dict[str, Any]:
    """Write ``out``: ``source`` with static QDQ MatMuls; return ``recipe`` with what the calibration used."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    if calibration is None:
        raise ExportError(
            f"int8 recipe {recipe.get('name', 'static')!r} calibrates activation ranges: pass --calibration-data "
            "FILE (sentences of the task, e.g. the training set; never the validation data)"
        )
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ExportError(
            "static int8 recipes need an onnxruntime whose quantize_static takes calibration_cache_path "
            "(upgrade onnxruntime), or choose another --int8-recipe"
        )
    if recipe["calibration"] not in _METHODS:
        raise ExportError(f"calibration {recipe['calibration']!r}; valid: {', '.join(_METHODS)}")
    method = CalibrationMethod[_METHODS[recipe["calibration"]]]
    graph_inputs = [i.name for i in onnx.load(str(source), load_external_data=False).graph.input]
    batches, length = calibration.batches(recipe, graph_inputs)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # "consider pre-processing": shape inference for CNNs, not this
    try:
        with tempfile.TemporaryDirectory(prefix="onnxpipe-calib-") as tmp:
            typed = _with_types(source, Path(tmp) / "typed.onnx")
            calibrator = create_calibrator(
                typed,
                list(recipe["op_types"]),
                augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=method,
            )
            cache = Path(tmp) / "ranges.json"
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print on every call
                for feeds in batches:
                    calibrator.collect_data(_One(feeds))
                save_tensors_data(calibrator.compute_data(), cache)
            del calibrator
            quantize_static(
                str(typed),
                str(out),
                calibration_data_reader=None,
                calibration_cache_path=cache,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe["op_types"]),
                per_channel=recipe["per_channel"],
                reduce_range=recipe["reduce_range"],
                activation_type=QuantType[recipe["activation_type"]],
                weight_type=QuantType[recipe["weight_type"]],
                calibrate_method=method,
                extra_options={
                    "ActivationSymmetric": False,
                    # the fused graphs carry contrib ops without type info
                    "DefaultTensorType": onnx.TensorProto.FLOAT,
                }
                # float MatMul outputs: onnxruntime runs DQ -> MatMul as MatMulIntegerToFloat (int32 sums scaled
                # to float) instead of requantizing each product to u8 (QLinearMatMul), one rounding fewer
                | ({} if recipe.get("quantize_outputs", True) else {"OpTypesToExcludeOutputQuantization": ["MatMul"]}),
            )
    finally:
        root.setLevel(level)
    quantized, kept = _count_quantized(out)
    if not quantized:
        raise ExportError(
            f"static int8 recipe {recipe.get('name', '')!r} quantized no MatMul's activations in {source.name} "
            "(their types could not be inferred); choose another --int8-recipe, e.g. the unfused graph's"
        )
    return {
        **recipe,
        "matmuls_quantized": quantized,
        "matmuls_kept_fp32": kept,
        "calibration_data": {"file": calibration.file, "sentences": sum(len(b["input_ids"]) for b in batches)}
        | ({"padded_length": length} if length else {}),
    }


def _with_types(source: Path, typed: Path) -> Path:
    """``source`` with every tensor's type inferred, contrib ops included (see the module doc), written to
    ``typed``; ``source`` itself where onnxruntime's symbolic inference fails (the count then tells)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        model = SymbolicShapeInference.infer_shapes(onnx.load(str(source)), auto_merge=True, guess_output_rank=True)
    except Exception:  # an operator it does not know: calibrate what onnx's own inference types
        return source
    onnx.save(model, str(typed))
    return typed


def _count_quantized(path: Path) -> tuple[int, int]:
    """MatMuls of ``path`` whose both inputs come out of a DequantizeLinear (int8 x int8), and the others."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    matmuls = [n for n in nodes if n.op_type == "MatMul"]
    quantized = sum(all(i in dequantized for i in n.input[:2]) for n in matmuls)
    return quantized, len(matmuls) - quantized
