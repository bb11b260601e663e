"""Build one engine-venv artifact, run by prepare.py on that engine's venv (engine_venvs.py), never imported.

    bench/.venvs/openvino/bin/python bench/prepare_venv.py ov-int8-static --checkpoint CKPT --out DIR \
        --calibration ../shared/data/sst2/train.tsv --calibration-sentences 300

- ``ov-fp32``: ``OVModelForSequenceClassification.from_pretrained(ckpt, export=True)``, saved;
- ``ov-int8-wo``: the same with ``OVWeightQuantizationConfig(bits=8)`` (NNCF weight-only int8);
- ``ov-int8-static``: the fp32 export through ``OVQuantizer.quantize`` with ``OVQuantizationConfig()`` (NNCF
  post-training static int8), calibrated on the first N sentences of the calibration file, tokenized as
  optimum-intel's documented recipe does (padding=True, truncation, max_length 128, batched);
- ``ct2-cls-int8`` / ``ct2-fe-int8``: CTranslate2's ``TransformersConverter`` with ``quantization="int8"``; for
  classification also ``head.npz``, the checkpoint's pooler and classifier weights for the numpy head.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def _sentences(path: Path, n: int) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = "sentence" if rows and "sentence" in rows[0] else "content"  # SST-2 train / dev
    return [r[column] for r in rows[:n]]


def ov(kind: str, ckpt: Path, out: Path, calibration: Path | None, n: int) -> None:
    from optimum.intel import (
        OVConfig,
        OVModelForSequenceClassification,
        OVQuantizationConfig,
        OVQuantizer,
        OVWeightQuantizationConfig,
    )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    if kind == "ov-int8-wo":
        model = OVModelForSequenceClassification.from_pretrained(
            str(ckpt), export=True, quantization_config=OVWeightQuantizationConfig(bits=8)
        )
        model.save_pretrained(out)
    elif kind == "ov-int8-static":
        if calibration is None:
            raise SystemExit("ov-int8-static needs --calibration")
        from datasets import Dataset

        model = OVModelForSequenceClassification.from_pretrained(str(ckpt), export=True)
        data = Dataset.from_dict({"sentence": _sentences(calibration, n)}).map(
            lambda b: tok(b["sentence"], padding=True, truncation=True, max_length=128),
            batched=True,
            remove_columns=["sentence"],
        )
        quantizer = OVQuantizer.from_pretrained(model)
        quantizer.quantize(
            ov_config=OVConfig(quantization_config=OVQuantizationConfig(num_samples=n)),
            calibration_dataset=data,
            save_directory=out,
        )
    else:
        OVModelForSequenceClassification.from_pretrained(str(ckpt), export=True).save_pretrained(out)
    tok.save_pretrained(out)


def ct2(kind: str, ckpt: Path, out: Path) -> None:
    import ctranslate2
    import numpy as np

    ctranslate2.converters.TransformersConverter(str(ckpt)).convert(str(out), quantization="int8", force=True)
    if kind == "ct2-cls-int8":
        from safetensors.numpy import load_file

        w = load_file(str(ckpt / "model.safetensors"))
        np.savez(
            out / "head.npz",
            pooler_w=w["bert.pooler.dense.weight"],
            pooler_b=w["bert.pooler.dense.bias"],
            classifier_w=w["classifier.weight"],
            classifier_b=w["classifier.bias"],
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["ov-fp32", "ov-int8-wo", "ov-int8-static", "ct2-cls-int8", "ct2-fe-int8"])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--calibration", type=Path, help="TSV with a 'sentence' or 'content' column (ov-int8-static)")
    ap.add_argument("--calibration-sentences", type=int, default=300)
    a = ap.parse_args()
    if a.kind.startswith("ov-"):
        ov(a.kind, a.checkpoint, a.out, a.calibration, a.calibration_sentences)
    else:
        ct2(a.kind, a.checkpoint, a.out)


if __name__ == "__main__":
    main()
