"""The package has no import circles and no import that runs back up its layers, function-level
imports included.

Every module of ``accentuate`` is read with :mod:`ast`; each ``import accentuate.x`` /
``from .x import y`` / ``from . import x`` (at module level or inside a function; those under
``if TYPE_CHECKING:`` excluded, since they never run) is an edge of a graph of modules. Any
strongly connected component with more than one module, or a module importing itself, fails the
test with the circle named; so does any edge from a module of a lower layer (:data:`LAYERS`) to
one of a higher layer.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

PACKAGE = "accentuate"
#: The package's source folder; ``ACCENTUATE_SRC`` points the test at another checkout.
ROOT = Path(os.environ.get("ACCENTUATE_SRC", Path(__file__).resolve().parents[1] / "src")) / PACKAGE


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a module of the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its code)."""
    modules = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    full = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == PACKAGE:
                    full = node.module
                else:
                    continue
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one; a name that
                # is no submodule (a function, a class, ``__version__``) is read from ``pkg`` itself
                subs = [f"{full}.{a.name}" for a in node.names if f"{full}.{a.name}" in modules]
                targets += subs
                if len(subs) < len(node.names):
                    targets.append(full)
            for t in targets:
                hit = _resolve(t, modules)
                if hit is not None:
                    graph[mod].add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a circle (size > 1, or a self-loop), Tarjan's way."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One circle inside ``comp``, as a list of modules starting and ending at the same one."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def test_the_graph_sees_relative_absolute_and_function_level_imports(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import c\n"
                                       "import accentuate.c\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(pkg)
    assert graph["accentuate.a"] == {"accentuate.sub.b"}
    assert graph["accentuate.sub.b"] == {"accentuate.c"}
    assert graph["accentuate.c"] == {"accentuate.a"}
    assert cycles(graph) == [["accentuate.a", "accentuate.c", "accentuate.sub.b"]]
    (pkg / "c.py").write_text("import os\n")
    assert cycles(import_graph(pkg)) == []
    # a name that is no submodule comes from the package's __init__, which imports a
    (pkg / "c.py").write_text("def g():\n    from . import f\n")
    assert import_graph(pkg)["accentuate.c"] == {"accentuate"}
    assert cycles(import_graph(pkg)) == [["accentuate", "accentuate.a", "accentuate.c", "accentuate.sub.b"]]
    (pkg / "d.py").write_text("import accentuate.d\n")
    assert ["accentuate.d"] in cycles(import_graph(pkg))


def test_no_import_circles() -> None:
    graph = import_graph()
    assert len(graph) > 20, f"found only {len(graph)} modules under {ROOT}"
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(
        f"  {len(c)} modules: {', '.join(c)}\n    e.g. {' -> '.join(_path(graph, c))}" for c in found)


#: The package's layers, lowest first: a module imports only from its own layer and the layers below.
#: Each module belongs to the layer of the longest prefix listed for it; every module must have one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core values", (
        "accentuate._version", "accentuate.errors", "accentuate.digest", "accentuate.saving", "accentuate.layout",
        "accentuate.spec", "accentuate.labels", "accentuate.images", "accentuate.photos", "accentuate.augment",
        "accentuate.params", "accentuate.transforms", "accentuate.opacity", "accentuate.regularize", "accentuate.metrics",
        "accentuate.hooks", "accentuate.settings", "accentuate.objectives", "accentuate.result",
        "accentuate.display", "accentuate.clip", "accentuate.outputs", "accentuate.sae",
    )),
    ("engine", ("accentuate.engine",)),
    ("models", ("accentuate.models",)),
    ("analyses and runs", ("accentuate.analysis", "accentuate.runs", "accentuate.study", "accentuate.judges")),
    ("report", ("accentuate.report",)),
    ("the package's face", ("accentuate",)),
    ("command line", ("accentuate.cli", "accentuate.__main__")),
)


def layer_of(module: str, layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> tuple[int, str] | None:
    """``(rank, name)`` of the layer ``module`` belongs to (its longest listed prefix), or ``None``."""
    best: tuple[int, int, str] | None = None
    for rank, (name, prefixes) in enumerate(layers):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), rank, name)
    return None if best is None else (best[1], best[2])


def upward_imports(graph: dict[str, set[str]],
                   layers: tuple[tuple[str, tuple[str, ...]], ...] = LAYERS) -> list[str]:
    """Every import from a module to one of a higher layer, and every module without a layer."""
    bad = [f"{m} belongs to no layer; add it to LAYERS" for m in sorted(graph) if layer_of(m, layers) is None]
    for m in sorted(graph):
        low = layer_of(m, layers)
        for target in sorted(graph[m]):
            high = layer_of(target, layers)
            if low is not None and high is not None and high[0] > low[0]:
                bad.append(f"{m} ({low[1]}) imports {target} ({high[1]})")
    return bad


def test_the_layer_rule_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from . import high\n")
    (pkg / "high.py").write_text("from .low import f\n")
    layers = (("low", ("accentuate.low",)), ("high", ("accentuate.high",)), ("face", ("accentuate",)))
    assert upward_imports(import_graph(pkg), layers) == [
        "accentuate.low (low) imports accentuate.high (high)"]
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    assert upward_imports(import_graph(pkg), layers) == []
    (pkg / "stray.py").write_text("")
    assert upward_imports(import_graph(pkg), layers[:2]) == [
        "accentuate belongs to no layer; add it to LAYERS", "accentuate.stray belongs to no layer; add it to LAYERS"]


def test_no_import_runs_back_up_the_layers() -> None:
    """Core values, engine, models, analyses and runs, report, the package's face, the command line:
    each imports only from its own layer and below, with no exception."""
    assert upward_imports(import_graph()) == []


def test_nothing_outside_the_command_line_imports_it() -> None:
    graph = import_graph()
    cli = layer_of("accentuate.cli")

    bad = [f"{m} imports {t}" for m in sorted(graph) for t in sorted(graph[m])
           if layer_of(t) == cli and layer_of(m) != cli]
    assert bad == []


#: Leaf modules and the only modules of the package each may import.
LEAVES = {
    "accentuate._version": set(),
    "accentuate.errors": set(),
    "accentuate.saving": set(),
    "accentuate.outputs.grid": {"accentuate.errors", "accentuate.outputs.figures"},
    "accentuate.outputs.figures": {"accentuate.outputs.io"},
    "accentuate.outputs.io": {"accentuate.errors"},
    "accentuate.spec": {"accentuate.errors"},
}


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaf_modules_import_nothing_above_them(leaf: str) -> None:
    graph = import_graph()
    assert leaf in graph, f"{leaf} is missing under {ROOT}"
    assert graph[leaf] <= LEAVES[leaf], f"{leaf} imports {sorted(graph[leaf] - LEAVES[leaf])}"
