"""`make docs` fails on a dead link: the Makefile's own mkdocs command, on a copy of the site's sources with
links broken (a page, an anchor, a committed bench/results file, a README link).

`make test` builds the real site before pytest; this checks that the build stays strict (mkdocs 1.6 with
--quiet, for one, stops counting warnings and passes a dead link).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("mkdocs.yml", "README.md", "docs", "bench/README.md", "bench/results")


def _make_docs_command() -> list[str]:
    """The mkdocs command of the Makefile's docs recipe, with its flags, run by this Python's mkdocs."""
    recipe = (ROOT / "Makefile").read_text(encoding="utf-8").split("\ndocs:", 1)[1]
    line = next(x for x in recipe.splitlines() if "mkdocs build" in x)
    args = shlex.split(line[line.index("mkdocs build") :])
    return [sys.executable, "-m", "mkdocs", *args[1:]]


@pytest.fixture(scope="module")
def site_sources(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="needs the docs extra: pip install '.[docs]'")
    root = tmp_path_factory.mktemp("docs-build")
    for name in SOURCES:
        src, dst = ROOT / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return root


# (file, pattern, replacement, what the warning names): each breaks one link the site must check. One build
# with all of them broken (a build takes seconds), which must fail naming each.
BREAKAGES = {
    "page": ("docs/edge.md", r"\(performance\.md#performance\)", "(perfomance.md)", "perfomance.md"),
    "anchor": ("docs/cli.md", r"\(serve\.md#serve\)", "(serve.md#no-such-heading)", "no-such-heading"),
    "bench-results-file": ("docs/edge.md", r"footprint\.json\)", "footprint-missing.json)", "footprint-missing.json"),
    "readme-link": ("README.md", r"\(docs/cli\.md\)", "(docs/no-such-page.md)", "no-such-page.md"),
}


def test_make_docs_fails_on_a_dead_link(site_sources: Path, tmp_path: Path) -> None:
    for case, (name, pattern, replacement, _) in BREAKAGES.items():
        text = (site_sources / name).read_text(encoding="utf-8")
        broken, n = re.subn(pattern, replacement, text, count=1)
        assert n == 1, f"{name} no longer has the link the {case} case breaks ({pattern}): pick another"
        (site_sources / name).write_text(broken, encoding="utf-8")
    cmd = [*_make_docs_command(), "--site-dir", str(tmp_path / "site")]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(cmd, cwd=site_sources, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, f"links broken ({', '.join(BREAKAGES)}) and the build passed:\n{done.stderr[-3000:]}"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    for case, (*_, named) in BREAKAGES.items():
        assert any(named in w for w in warnings), f"no warning for the broken {case} link:\n" + "\n".join(warnings)
