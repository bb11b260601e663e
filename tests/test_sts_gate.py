"""The STS Benchmark gate of feature-extraction exports: Spearman x100, the file reader, the 1-point rule."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch  # onnxpipe_export imports the export extra

from onnxpipe.errors import ExportError, ValidationError  # noqa: E402


def test_spearman_uses_average_ranks_for_ties():
    from onnxpipe_export._stsb import spearman_x100

    # by hand: ranks (0, 1.5, 1.5, 3) and (0, 2, 1, 3); Pearson of those = 4.5 / sqrt(4.5 * 5) = 0.94868
    assert spearman_x100(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0, 4.0])) == 94.87
    x = np.random.default_rng(0).normal(size=50)
    assert spearman_x100(np.exp(x), x) == 100.0  # ranks only: any increasing transform is a perfect score
    assert spearman_x100(-x, x) == -100.0


@pytest.mark.parametrize(
    "int8,fails", [({"batched": 81.0, "one_at_a_time": 81.9}, False), ({"batched": 80.9, "one_at_a_time": 82.0}, True)]
)
def test_export_fails_when_int8_falls_more_than_one_point_below_fp32(int8, fails):
    from onnxpipe_export._stsb import _gate

    figures = {
        "file": "dev.csv",
        "pytorch": 82.0,
        "variants": {"fp32": {"batched": 82.0, "one_at_a_time": 82.0}, "int8": int8},
    }
    if fails:
        with pytest.raises(ValidationError, match=r"80\.90 .*more than 1\.0 point below fp32 \(82\.00\)"):
            _gate(figures)
    else:
        _gate(figures)
        assert figures["int8_gate"]["met"] is True


def test_a_file_that_is_not_sts_is_refused_naming_the_line(tmp_path):
    from onnxpipe_export._stsb import read_sts

    bad = tmp_path / "sst2.tsv"
    bad.write_text("label\tcontent\n1\ta fine film\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"line 1: not an STS Benchmark row"):
        read_sts(bad)
