"""The ```python and ```console blocks of README.md and docs/*.md run, and print what the docs say they print;
the model-folder page names every key of the manifest reader.

Each page's blocks run in order in one namespace (as a reader pastes them into one session), in a scratch
folder holding FIXTURE_FILES, on the embedded model minilm-sst2; every block is one test case. In a console
block each ``$ onnxpipe ...`` line runs through the CLI's ``main`` in this process (no subprocess: cheap) and
must exit 0; the lines below it, up to the next ``$``, are its output. A block that cannot run here is marked
just above its fence with ``<!-- snippet: skip, REASON -->`` (REASON one of SKIP_REASONS); test_marked_snippets
lists them and fails on a marker without a known reason. Other blocks (```bash synopses with placeholders,
install lines) are not run.

Shown output: a comment that starts like a Python value (``[``, ``{``, ``(``, a quote, a digit, ``True``...)
after an expression, on its line or on the comment lines right below it, is what the expression evaluates to,
compared with its ``repr``: ``...`` stands for any text (doctest's ELLIPSIS), whitespace is free, and a number
shown with d decimals (``0.79`` or ``0.79...``) matches the printed number within 10**-d. Any other comment is
prose and is not checked.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import os
import re
import shlex
import tokenize
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# What a marked block needs that this suite does not have; a marker names one of these.
SKIP_REASONS = (
    "needs a running server",
    "needs a model exported from the hub",
    "needs a folder exported with --ort",
    "needs a GPU",
)
# Files the blocks read, written into the scratch folder they run in.
FIXTURE_FILES = {
    "reviews.txt": "A gripping, beautifully acted film.\nDull and far too long.\n\nI loved it!\n",
    "reviews.csv": 'review\n"A gripping, beautifully acted film."\nDull and far too long.\n',
}

_FENCE = re.compile(r"^```(python|console)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARKER = re.compile(r"<!--\s*snippet:\s*skip,\s*(.*?)\s*-->\s*$")
_VALUE_START = re.compile(r"^([\[{('\"\-\d]|True\b|False\b|None\b|array\()")
_NUMBER = re.compile(r"-?\d+\.\d+(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str  # python or console
    code: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _snippets(page: Path) -> list[Snippet]:
    text = page.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        before = [line for line in text[: m.start()].splitlines() if line.strip()]
        marker = _MARKER.match(before[-1].strip()) if before else None
        line = text.count("\n", 0, m.start()) + 1
        found.append(Snippet(page, line, m.group(1), m.group(2), marker.group(1) if marker else None))
    return found


ALL = [s for page in PAGES for s in _snippets(page)]
RUN = [s for s in ALL if s.skip is None]


def _comments(code: str) -> dict[int, str]:
    """Line number -> the text of the comment on it."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return {t.start[0]: t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT}


def _shown(stmt: ast.stmt, next_line: int, comments: dict[int, str], code_lines: list[str]) -> str | None:
    """The output a block shows for the statement, or None when it shows none."""
    end = stmt.end_lineno or stmt.lineno
    trailing = comments.get(end, "")
    if trailing and _VALUE_START.match(trailing):
        return trailing
    below = []
    for n in range(end + 1, next_line):
        if not code_lines[n - 1].strip().startswith("#"):
            break
        below.append(comments[n])
    if below and _VALUE_START.match(below[0]):
        return " ".join(below)
    return None


def _literal(text: str) -> str:
    return r"\s*".join(re.escape(part) for part in text.split(" "))


def _matches(shown: str, printed: str) -> bool:
    pattern, wanted = [], []
    pos = 0
    text = " ".join(shown.split())
    for m in re.finditer(r"\.\.\.|" + _NUMBER.pattern, text):
        before = text[pos : m.start()]
        if m.group() == "...":
            # "0.79..." is the number 0.79 shown truncated: the number's own pattern already takes every digit.
            if before or not wanted or not text[m.start() - 1].isdigit():
                pattern.append(_literal(before) + ".*?")
        else:
            pattern.append(_literal(before) + r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
            wanted.append(m.group())
        pos = m.end()
    pattern.append(_literal(text[pos:]))
    found = re.fullmatch("".join(pattern), " ".join(printed.split()), re.S)
    if found is None:
        return False
    for shown_number, got in zip(wanted, found.groups()):
        last_digit = Decimal(10) ** Decimal(shown_number).as_tuple().exponent
        if abs(Decimal(got) - Decimal(shown_number)) >= last_digit:
            return False
    return True


def _run_console(snippet: Snippet) -> None:
    from onnxpipe._cli import main

    lines = snippet.code.replace("\\\n", " ").splitlines()
    commands = [n for n, line in enumerate(lines) if line.startswith("$ ")]
    assert commands, f"{snippet.id}: a console block without a '$ ' command"
    for i, n in enumerate(commands):
        argv = shlex.split(lines[n][2:], comments=True)
        assert argv[0] == "onnxpipe", f"{snippet.id}: only onnxpipe commands run here, not {argv[0]!r}"
        shown = "\n".join(lines[n + 1 : commands[i + 1] if i + 1 < len(commands) else len(lines)]).strip()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                rc = main(argv[1:])
            except SystemExit as e:
                rc = e.code
        assert rc in (0, None), f"{snippet.id}: `{lines[n][2:]}` exits {rc}"
        if shown and not _matches(shown, out.getvalue()):
            printed = out.getvalue()
            raise AssertionError(f"{snippet.id}: the docs show\n  {shown}\nbut `{lines[n][2:]}` prints\n  {printed}")


def _run(snippet: Snippet, namespace: dict) -> None:
    if snippet.lang == "console":
        return _run_console(snippet)
    tree = ast.parse(snippet.code)
    comments = _comments(snippet.code)
    code_lines = snippet.code.splitlines()
    body = tree.body
    for i, stmt in enumerate(body):
        next_line = body[i + 1].lineno if i + 1 < len(body) else len(code_lines) + 1
        shown = _shown(stmt, next_line, comments, code_lines)
        where = f"{snippet.id} (block line {stmt.lineno})"
        if isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), where, "eval"), namespace)
            if shown is not None and not _matches(shown, repr(value)):
                raise AssertionError(f"{where}: the docs show\n  {shown}\nbut it evaluates to\n  {value!r}")
        else:
            if shown is not None:
                raise AssertionError(f"{where}: an output comment ({shown!r}) after a statement with no value")
            exec(compile(ast.Module([stmt], type_ignores=[]), where, "exec"), namespace)


@functools.cache
def _page_outcomes(page: Path, scratch: Path) -> dict[int, BaseException | None]:
    """Run a page's unmarked blocks in order in one namespace; the error each raised (None: it passed)."""
    namespace: dict = {"__name__": "__docs__"}
    outcomes: dict[int, BaseException | None] = {}
    cwd = os.getcwd()
    os.chdir(scratch)
    try:
        for snippet in (s for s in RUN if s.page == page):
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    _run(snippet, namespace)
                outcomes[snippet.line] = None
            except Exception as e:  # reported by that block's test case
                outcomes[snippet.line] = e
    finally:
        os.chdir(cwd)
    return outcomes


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs-snippets")
    for name, text in FIXTURE_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("snippet", RUN, ids=[s.id for s in RUN])
def test_snippet_runs_and_prints_what_the_docs_show(snippet: Snippet, scratch: Path) -> None:
    error = _page_outcomes(snippet.page, scratch)[snippet.line]
    if isinstance(error, AssertionError):
        raise error
    if error is not None:
        raise AssertionError(
            f"{snippet.id}: the block raises {type(error).__name__}: {error}. Fix the docs, or, when it cannot "
            f"run here, mark it with <!-- snippet: skip, REASON --> (REASON one of {SKIP_REASONS})"
        ) from error


def test_marked_snippets() -> None:
    marked = [s for s in ALL if s.skip is not None]
    print(f"\n{len(RUN)} of {len(ALL)} python and console blocks run; {len(marked)} marked as not runnable here:")
    for s in marked:
        print(f"  {s.id}: {s.skip}")
    unknown = [f"{s.id}: {s.skip!r}" for s in marked if s.skip not in SKIP_REASONS]
    assert not unknown, f"skip markers need one of the reasons {SKIP_REASONS}: {unknown}"
    # A marker with no block right below it would mark nothing: it must sit just above a ```python fence.
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        in_fence = False
        for n, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
            elif not in_fence and _MARKER.match(line.strip()):
                after = next((x for x in lines[n + 1 :] if x.strip()), "")
                where = f"{page.relative_to(ROOT)}:{n + 1}"
                assert after.startswith(("```python", "```console")), f"{where}: a marker with no block below it"
    assert RUN, "no docs snippet runs"


@pytest.mark.parametrize(
    ("shown", "printed", "ok"),
    [
        ("[{'label': 'POSITIVE', 'score': 0.79...}]", "[{'label': 'POSITIVE', 'score': 0.7956311106681824}]", True),
        ("[{'label': 'POSITIVE', 'score': 0.80}]", "[{'label': 'POSITIVE', 'score': 0.7956311106681824}]", True),
        ("[{'label': 'POSITIVE', 'score': 0.78...}]", "[{'label': 'POSITIVE', 'score': 0.7956311106681824}]", False),
        ("[{'label': 'NEGATIVE', 'score': 0.79...}]", "[{'label': 'POSITIVE', 'score': 0.7956311106681824}]", False),
        ("(2, 16, 384)", "(2, 16, 384)", True),
        ("(2, 16, 384)", "(2, 17, 384)", False),
        ("[[101, 1045, ...], [101, ...]]", "[[101, 1045, 5, 102], [101, 7, 102]]", True),
        ("[[101, 1045, ...],\n [101, ...]]", "[[101, 1046, 5, 102], [101, 7, 102]]", False),
        ("{'a': 1.5e-3}", "{'a': 0.0015}", True),
        ("{'a': 1.5e-3}", "{'a': 0.0016}", False),
        ("[{'score': 0.99...}, ...]", "[{'score': 0.991}, {'score': 0.009}]", True),
    ],
)
def test_output_matching(shown: str, printed: str, ok: bool) -> None:
    assert _matches(shown, printed) is ok


def test_model_folder_page_names_every_manifest_key() -> None:
    # The contract page is written from the reader: every key the typed manifest reads or writes is on it.
    import dataclasses

    from onnxpipe import _manifest

    page = (ROOT / "docs" / "model-folder.md").read_text(encoding="utf-8")
    prose = re.sub(r"^```.*?^```", "", page, flags=re.M | re.S)  # fences would pair the backticks wrongly
    spans = " ".join(re.findall(r"`([^`]+)`", prose))
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in (_manifest.Manifest, _manifest.Variant, _manifest.OrtFormat, _manifest.Pooling, _manifest.FileEntry)
        for f in dataclasses.fields(cls)
        if f.name not in ("folder", "extra") and not re.search(rf"\b{f.name}\b", spans)
    ]
    missing += [p for p in _manifest.PRECISIONS if not re.search(rf"\b{re.escape(p)}\b", spans)]
    assert not missing, f"docs/model-folder.md does not document {missing}"


def test_readme_accuracy_is_the_embedded_models_manifest() -> None:
    # The README quotes the embedded model's accuracy; the one home of those figures is its manifest.
    import json

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quoted = re.search(
        r"SST-2 dev accuracy: PyTorch ([\d.]+), fp32 ONNX ([\d.]+), int8 ([\d.]+) \(([\d.]+) % label agreement\)",
        " ".join(readme.split()),
    )
    assert quoted, "README.md no longer quotes the embedded model's SST-2 accuracy in the form this test reads"
    figures = json.loads((ROOT / "models" / "minilm-sst2" / "manifest.json").read_text())["validation_data"]
    variants = figures["variants"]
    assert [float(x) for x in quoted.groups()] == [
        round(figures["pytorch_accuracy"], 4),
        round(variants["fp32"]["accuracy"], 4),
        round(variants["int8"]["accuracy"], 4),
        round(100 * variants["int8"]["label_agreement_with_pytorch"], 1),
    ]
