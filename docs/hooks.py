"""MkDocs hook: the README is the site's home page, and the committed benchmark figures are part of the site.

The pages are written for GitHub, where a link leaves docs/ as `../bench/results/x.json` and the README links
`docs/tasks.md`. MkDocs only knows files under docs/, so this hook (1) adds README.md as index.md and the
files under MIRRORED (bench/README.md, bench/results/) at their repository paths, and (2) resolves every
relative link from where its page lives in the repository and writes it from the docs root
(`../bench/results/x.json` in docs/edge.md becomes `/bench/results/x.json`, `docs/tasks.md` in the README
`/tasks.md`). MkDocs then checks those links like any other (mkdocs.yml: `absolute_links: relative_to_docs`)
and writes them relative in the HTML: a link to a file that is neither a page nor mirrored, or to a missing
anchor, still fails the strict build. No file is copied into docs/, so nothing can go stale.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
# Repository paths served by the site besides docs/: the benchmarks' own README and their committed results.
MIRRORED = ("bench/README.md", "bench/results")
HOME = "README.md"
# An inline Markdown link or image target: ](target) or ](target "title").
_LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")


def _mirrored_files() -> list[Path]:
    paths: list[Path] = []
    for entry in MIRRORED:
        path = ROOT / entry
        paths.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return [p for p in paths if not p.name.endswith(".tmp")]


def on_files(files, config):
    if files.get_file_from_path("index.md") is not None:
        raise ValueError("docs/index.md exists: the home page is README.md (docs/hooks.py adds it as index.md)")
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / HOME)))
    for path in _mirrored_files():
        files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def _repository_path(page_src: str) -> str:
    """Where the page's Markdown lives in the repository (links in it are relative to that)."""
    if page_src == "index.md":
        return HOME
    if any(page_src == m or page_src.startswith(m + "/") for m in MIRRORED):
        return page_src
    return "docs/" + page_src


def _rewrite(target: str, page_dir: str) -> str:
    if re.match(r"^[a-z][a-z0-9+.-]*:|^/|^#", target):  # external, already from the docs root, or an anchor
        return target
    path, sep, anchor = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(page_dir, path))
    if resolved.startswith("docs/"):
        resolved = resolved[len("docs/") :]
    return "/" + resolved + sep + anchor


def on_page_markdown(markdown, page, config, files):
    page_dir = posixpath.dirname(_repository_path(page.file.src_uri))
    return _LINK.sub(lambda m: m.group(1) + _rewrite(m.group(2), page_dir) + m.group(3), markdown)
