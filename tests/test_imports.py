"""The package's import graph: no cycle anywhere, and the torch-free stages never reach back into training.

The graph is read from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` of a ``metaerr_edge`` module counts, at module level or inside a function
(a lazy import still ties the two modules together), except those under ``if TYPE_CHECKING:``.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``; the
implicit import of a module's parent packages is not an edge, and neither is an import by name
(``importlib.import_module("...")``: the CLI's commands, the package root's lazy attributes).

Run as a script to print every cycle of the whole package::

    python tests/test_imports.py
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = "metaerr_edge"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: importer -> {imported: "module" (at import time) or "lazy" (inside a function)}
Graph = dict[str, dict[str, str]]


def module_name(path: Path, root: Path = ROOT, package: str = PACKAGE) -> str:
    """``root/runtime/session.py`` -> ``metaerr_edge.runtime.session``; a package is its ``__init__``."""
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement and whether it runs lazily (inside a function), TYPE_CHECKING blocks left out."""

    def walk(nodes: Iterable[ast.AST], lazy: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                yield from walk(node.orelse, lazy)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, lazy
            else:
                inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from walk(ast.iter_child_nodes(node), inner)

    yield from walk(tree.body, False)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        yield from filter(None, (known(a.name) for a in node.names))
        return
    if node.level:
        base_parts = importer.split(".") if is_package else importer.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else known(base)
        if target:
            yield target


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> Graph:
    """The import edges between the modules of ``package`` (its source under ``root``)."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: Graph = {m: {} for m in modules}
    for importer, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, lazy in _imports(tree):
            for target in _targets(node, importer, path.name == "__init__.py", modules):
                if target != importer and graph[importer].get(target) != "module":
                    graph[importer][target] = "lazy" if lazy else "module"
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def shortest_cycle(graph: Graph, component: Iterable[str]) -> list[str]:
    """One shortest cycle through the first module of ``component``, as ``[a, b, ..., a]``."""
    members = sorted(component)
    start = members[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return []  # not reached for a strongly connected component


def describe_cycles(graph: Graph, prefix: str = "") -> list[str]:
    """One line per cycle that touches a module starting with ``prefix``: ``a -> b ~> a``
    (``->`` an import at module level, ``~>`` one inside a function), after the component's size."""
    lines = []
    for component in strongly_connected(graph):
        if not any(m.startswith(prefix) for m in component):
            continue
        cycle = shortest_cycle(graph, component)
        hops = "".join(f" {'~>' if graph[a][b] == 'lazy' else '->'} {b}" for a, b in zip(cycle, cycle[1:]))
        lines.append(f"{len(component)} modules: {cycle[0]}{hops}")
    return lines


def test_no_module_of_the_package_is_on_an_import_cycle() -> None:
    graph = import_graph()
    assert {"metaerr_edge.runtime.session", "metaerr_edge.runtime.ort_backend", "metaerr_edge.pipeline"} <= set(graph)
    assert describe_cycles(graph) == []


def folder(module: str) -> str:
    """``metaerr_edge.runtime.session`` -> ``runtime``; a top-level module is its own folder."""
    return module.split(".")[1] if module.count(".") else "(root)"


#: The torch-free stages (a device install: numpy, onnxruntime, pillow; matplotlib for figures) and
#: what they may import, lazily or not: the report and the figures it draws run there too.
DEVICE_SIDE = {"contract", "runtime", "decide", "bench", "report", "plots", "shift_report", "metrics"}
SHARED = {"errors", "registry", "console", "_fileio", "options", "(root)"}  # (root): the package itself, imported anyway


def test_the_device_side_imports_nothing_upstream() -> None:
    """runtime, decide, bench, the contract, the report and its figures and metrics import no training stage (data, models, meta, scores,
    pipeline, fuse, evaluate, semisup, config), not even inside a function: nothing there pulls torch
    into a device. Training may import them (the pipeline registers its run opener with the runtime)."""
    graph = import_graph()
    arrows = {(folder(a), folder(b), a, b) for a, targets in graph.items() for b in targets}
    bad = sorted(f"{a} -> {b}" for fa, fb, a, b in arrows if fa in DEVICE_SIDE and fb not in DEVICE_SIDE | SHARED)
    assert bad == []
    assert {fb for fa, fb, _, _ in arrows if fa == "contract"} <= {"contract", "errors"}  # the contract is a leaf


def test_folders_point_one_way() -> None:
    """Between folders the graph is acyclic: a topological order exists (the pipeline's)."""
    graph = import_graph()
    edges = {(folder(a), folder(b)) for a, targets in graph.items() for b in targets if folder(a) != folder(b)}
    folders = {f for e in edges for f in e}
    order, remaining = [], set(folders)
    while remaining:
        leaves = sorted(f for f in remaining if not any(a == f and b in remaining for a, b in edges))
        assert leaves, f"folders import each other in a circle: {sorted(remaining)} ({sorted(e for e in edges if set(e) <= remaining)})"
        order += leaves
        remaining -= set(leaves)
    assert order.index("contract") < order.index("fuse") < order.index("commands")
    assert order.index("models") < order.index("meta") < order.index("pipeline") < order.index("evaluate")


def test_session_is_backend_neutral() -> None:
    """session.py imports no backend module, and the backends import session (not the reverse)."""
    graph = import_graph()
    backends = {f"{PACKAGE}.runtime.{m}" for m in ("ort_backend", "trt_backend", "torch_backend")}
    assert not backends & set(graph[f"{PACKAGE}.runtime.session"])
    assert all(f"{PACKAGE}.runtime.session" in graph[b] for b in backends)


def test_the_cycle_finder_finds_lazy_and_relative_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "a.py").write_text("from pkg.sub.b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .a import g\n")  # lazy, relative: still a cycle
    (pkg / "sub" / "c.py").write_text("if TYPE_CHECKING:\n    from pkg.sub import a\n")  # typing only: no edge
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.a": "module"} and graph["pkg.sub.c"] == {}
    assert graph["pkg.sub.b"] == {"pkg.sub.a": "lazy"}
    assert strongly_connected(graph) == [["pkg.sub.a", "pkg.sub.b"]]
    assert describe_cycles(graph) == ["2 modules: pkg.sub.a -> pkg.sub.b ~> pkg.sub.a"]
    assert describe_cycles(graph, "pkg.other") == []


if __name__ == "__main__":
    cycles = describe_cycles(import_graph())
    print("\n".join(cycles) if cycles else f"no import cycle in {PACKAGE}")
