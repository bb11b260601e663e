"""conftest's ``tiny_export`` exports each tiny model once and cuts copies from it: a cut must be the folder an
export of just those precisions writes, or every test reading one would test the cut instead of the export."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.torch


def _tree(folder):
    """Every file's bytes, the manifest parsed, without the one field that differs between two exports."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    manifest = json.loads(files.pop("manifest.json"))
    del manifest["provenance"]["exported_at"]
    return manifest, files


# (arch, head, a request the union folder is cut down for)
CUTS = [
    ("bert", "text-classification", "int8,fp32"),  # cut from int8, int8-exact, fp16, fp32
    ("llama", "text-generation", "fp32,int4"),  # cut from fp32, int4, int8
]


@pytest.mark.parametrize("arch,head,precisions", CUTS)
def test_a_cut_folder_is_what_an_export_of_its_precisions_writes(
    tiny_checkpoint, tiny_export, tmp_path, arch, head, precisions
):
    from _folders import tiny_export_precisions
    from onnxpipe import pipeline
    from onnxpipe_export import export

    assert set(precisions.split(",")) < set(tiny_export_precisions(arch, head))  # really a cut, not the union
    cut = tiny_export(arch, head, precisions)
    direct = export(tiny_checkpoint(arch, head), task=head, out=tmp_path / "m", precisions=precisions, progress=False)
    cut_manifest, cut_files = _tree(cut)
    direct_manifest, direct_files = _tree(direct)
    assert sorted(cut_files) == sorted(direct_files)
    assert [name for name in cut_files if cut_files[name] != direct_files[name]] == []
    assert cut_manifest == direct_manifest
    assert sorted(cut_manifest["variants"]) == sorted(precisions.split(","))
    assert pipeline(head, model=cut).precision == pipeline(head, model=direct).precision  # the same default


def test_the_precision_order_of_a_request_does_not_matter(tiny_export):
    assert tiny_export("bert", "text-classification", "fp16,fp32") == tiny_export(
        "bert", "text-classification", "fp32,fp16"
    )
