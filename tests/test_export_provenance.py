"""The manifest's provenance names the export's source as a reader elsewhere can: a hub id as given, a local
checkpoint by its folder's name, never the exporting machine's path (it travels with every copy of the folder)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("onnxpipe_export", reason="needs the export extra")

from onnxpipe_export._assemble import _provenance  # noqa: E402


@pytest.mark.parametrize(
    "given, local, want",
    [
        ("{tmp}/ckpts/my-bert", "{tmp}/ckpts/my-bert", "my-bert"),
        ("{tmp}/ckpts/my-bert/", "{tmp}/ckpts/my-bert", "my-bert"),
        ("{tmp}/ckpts/my-bert/../my-bert", "{tmp}/ckpts/my-bert", "my-bert"),
        ("org/some-model", None, "org/some-model"),
    ],
)
def test_provenance_source_is_a_name_not_a_path(tmp_path, given, local, want):
    folder = None if local is None else Path(local.format(tmp=tmp_path))
    if folder is not None:
        folder.mkdir(parents=True)
    ckpt = SimpleNamespace(source=given.format(tmp=tmp_path), local=folder, config=SimpleNamespace())
    prov = _provenance(ckpt, None)
    assert prov["source"] == want
    assert str(tmp_path) not in repr(prov)
    assert prov["source_kind"] == ("hub" if folder is None else "local folder")
