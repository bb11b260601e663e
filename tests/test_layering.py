"""Dependencies point one way: checkpoint -> export -> model folder -> runtime. No runtime module imports,
or loads by name, the export stage; the export stage reaches the runtime through its modules only."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    if isinstance(node, ast.Call):  # importlib.import_module("..."), entry point strings, ...
        return [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return []


def test_no_runtime_module_reaches_into_the_export_stage():
    hits = []
    for path in sorted((ROOT / "runtime").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if any("onnxpipe_export" in n for n in _names(node)):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        # Not even in a string: only comments may mention it (the AST has none).
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "onnxpipe_export" in node.value:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno} (string)")
    assert not hits, f"runtime/ names the export stage: {hits}"


def test_export_command_is_registered_through_the_entry_point():
    from importlib.metadata import entry_points

    eps = {ep.name: ep.value for ep in entry_points(group="onnxpipe.commands")}
    assert eps.get("export") == "onnxpipe_export._cli:register", (
        "reinstall the package (pip install -e .) so the onnxpipe.commands entry point is registered"
    )
    from onnxpipe._cli import build_parser

    assert "export" in build_parser()._subparsers._group_actions[0].choices


def test_the_export_stage_uses_the_runtime_through_its_shared_module_only():
    allowed = {"onnxpipe", "onnxpipe.errors", "onnxpipe._for_export"}
    hits = []
    for path in sorted((ROOT / "export").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            hits += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}"
                for n in names
                if n.startswith("onnxpipe") and not n.startswith("onnxpipe_export") and n not in allowed
            ]
    assert not hits, f"the export stage reaches into private runtime modules (add them to onnxpipe._for_export): {hits}"
