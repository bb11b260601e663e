"""Dependencies point one way: checkpoint -> export -> model folder -> runtime. No runtime module imports,
or loads by name, the export stage; the export stage reaches the runtime through its modules only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def test_the_export_stage_calls_no_runtime_command():
    # Commands are not a protocol: export once called `info`'s command function with its own args, rewritten.
    # What the two share (the manifest's summary) is a function of its own.
    import onnxpipe._for_export as shared

    assert not [n for n in shared.__all__ if n.startswith("cmd_")], shared.__all__
    assert "format_manifest" in shared.__all__


# -- import cycles ----------------------------------------------------------------------------------------------
# A cycle makes a module's meaning depend on which of its partners was imported first, and forces the function-
# level import that hides it. Every import counts: at the top, inside functions (they run later, but the two
# modules still cannot be understood or moved apart), and importlib.import_module("...") with a literal name.
def _module_names(root: Path, package: str | None) -> dict[str, Path]:
    """Dotted module name -> file: the files of ``package`` under ``root``, or ``root``'s scripts as top-level
    modules when ``package`` is None (bench/ puts its own folder on sys.path)."""
    if package is None:
        return {p.stem: p for p in sorted(root.glob("*.py"))}
    names = {}
    for p in sorted((root / package).rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = p
    return names


def _imported(name: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The modules of ``modules`` that ``node`` (in module ``name`` at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def absolute(target: str, level: int) -> str:
        if not level:
            return target
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + ([target] if target else []))

    found: list[str] = []
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        module = absolute(node.module or "", node.level)
        # `from . import x` and `from .pkg import x` import the submodule x where there is one.
        subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
        found = subs if len(subs) == len(node.names) else [module, *subs]
    elif isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        first = node.args[0] if node.args else None
        if called == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str):
            text = first.value
            found = [absolute(text.lstrip("."), len(text) - len(text.lstrip(".")))]
    return [m for m in found if m in modules and m != name]


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {m for node in ast.walk(tree) for m in _imported(name, path, node, modules)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    def path(start: str, component: set[str]) -> list[str]:  # a shortest way back to start, breadth first
        came: dict[str, str] = {}
        frontier = [start]
        while frontier:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w == start:
                        out = [v]
                        while out[-1] != start:
                            out.append(came[out[-1]])
                        return [*reversed(out), start]
                    if w not in came:
                        came[w] = v
                        nxt.append(w)
            frontier = nxt
        raise AssertionError("a strongly connected component without a cycle")

    return [path(min(c), c) for c in components]


def test_the_cycle_finder_sees_every_kind_of_import():
    # The finder itself, on a made-up graph: a test that cannot see a cycle would pass on any code.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    modules = {"pkg": Path("pkg/__init__.py"), "pkg.a": Path("pkg/a.py"), "pkg.b": Path("pkg/b.py")}
    source = (
        "from . import b\n"
        "from .b import thing\n"
        "import pkg.b\n"
        "def f():\n    from pkg import b\n"
        "def g():\n    importlib.import_module('.b', __package__)\n"
        "def h():\n    import_module('pkg.b')\n"
    )
    for line in ast.parse(source).body:
        hits = [m for node in ast.walk(line) for m in _imported("pkg.a", Path("pkg/a.py"), node, modules)]
        assert hits == ["pkg.b"], ast.unparse(line)


@pytest.mark.parametrize(
    "root, package", [("runtime", "onnxpipe"), ("export", "onnxpipe_export"), ("bench", None)], ids=str
)
def test_no_import_cycles(root, package):
    modules = _module_names(ROOT / root, package)
    assert len(modules) > 5, f"found too few modules under {root}/: {sorted(modules)}"
    cycles = _cycles(_import_graph(modules))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# -- no reach-ins ------------------------------------------------------------------------------------------------
# A name with one leading underscore is its part's own business: another part that calls it breaks when the owner
# renames or reshapes it, and nothing there says someone outside depends on it. The runtime's *parts* follow its
# layout: each subpackage (onnxpipe._pipelines, onnxpipe._serve) is one part, and each module directly in
# onnxpipe/ is a part of its own. Private *modules* are fine to import (they are the package's implementation);
# their private *names* are not, and what crosses a part is public there (e.g. Pipeline.execute_batch).
# Attribute access is judged by name, as a static test must: ``x._name`` (x not self, cls or super()) is a
# reach-in when ``_name`` is defined in another part and nowhere in the caller's own part.
def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, methods, assigned names and attributes, arguments."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return {n for n in names if _private(n)}


def _reach_ins(sources: dict[str, tuple[Path, str]]) -> list[str]:
    """``module: line what`` for every use of another part's private name among ``sources`` (module -> (path,
    text))."""
    trees = {m: ast.parse(text) for m, (_, text) in sources.items()}
    modules = {m: path for m, (path, _) in sources.items()}
    by_part: dict[str, set[str]] = {}
    for m, tree in trees.items():
        by_part.setdefault(_part(m), set()).update(_defined_private(tree))
    hits = []
    for m, tree in trees.items():
        path, own = modules[m], _part(m)
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        imported: dict[str, str] = {}  # local name -> module of another part, for `module._name`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)] if node.level else []
                source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                for a in node.names:
                    target = f"{source}.{a.name}"
                    if target in modules:  # a submodule: `from .. import _model`
                        if _part(target) != own:
                            imported[a.asname or a.name] = target
                    elif source in modules and _part(source) != own and _private(a.name):
                        hits.append(f"{m}:{node.lineno} imports {source}.{a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in modules and _part(a.name) != own and a.asname:
                        imported[a.asname] = a.name
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in imported:
                hits.append(f"{m}:{node.lineno} uses {imported[value.id]}.{node.attr}")
                continue
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
                continue
            owners = sorted(p for p, names in by_part.items() if p != own and node.attr in names)
            if owners and node.attr not in by_part.get(own, set()):
                hits.append(f"{m}:{node.lineno} calls {ast.unparse(node)} (private to {', '.join(owners)})")
    return hits


def test_the_reach_in_finder_sees_every_kind_of_reach_in():
    # The finder itself, on made-up modules: a finder that cannot see a reach-in would pass on any code.
    owner = "X = 1\n_Y = 2\nclass Thing:\n    def _run(self): ...\n    def run(self): return self._run()\n"
    sources = {
        "pkg._owner": (Path("pkg/_owner.py"), owner),
        # one part: a subclass in a subpackage may call its base's private hook through super()
        "pkg._sub.inner": (
            Path("pkg/_sub/inner.py"),
            "from .._owner import Thing\nclass Sub(Thing):\n    def _own(self): return super()._run()\n",
        ),
        "pkg._sub.other": (Path("pkg/_sub/other.py"), "def f(sub):\n    return sub._own()\n"),
        "pkg._quiet": (Path("pkg/_quiet.py"), "from ._owner import X, Thing\nThing().run()\n"),
        "pkg._caller": (
            Path("pkg/_caller.py"),
            "from ._owner import _Y\nfrom . import _owner\nz = _owner._Y\ndef f(thing):\n    return thing._run()\n"
            "def g(sub):\n    return sub._own()\n",
        ),
    }
    assert _reach_ins(sources) == [
        "pkg._caller:1 imports pkg._owner._Y",
        "pkg._caller:3 uses pkg._owner._Y",
        "pkg._caller:5 calls thing._run (private to pkg._owner)",
        "pkg._caller:7 calls sub._own (private to pkg._sub)",
    ]


def test_no_part_of_the_runtime_reaches_into_another():
    modules = _module_names(ROOT / "runtime", "onnxpipe")
    assert {_part(m) for m in modules} >= {"onnxpipe._pipelines", "onnxpipe._serve", "onnxpipe._tokenizer"}
    hits = _reach_ins({m: (p, p.read_text(encoding="utf-8")) for m, p in modules.items()})
    assert not hits, "calls into another part's private names (make them public there): " + "; ".join(hits)
