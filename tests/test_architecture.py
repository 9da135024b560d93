"""The shape of apiserver/, read from its source with ``ast``: imports without cycles, folders
without two-way ties, narrow constructors, files of a readable size."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "apiserver"

#: The only classes whose constructor takes the whole application (docs/design.md).
TAKE_THE_APPLICATION = {"apiserver.service.ApiServer", "apiserver.internal.InternalApi"}
#: Longest file in apiserver/, in lines.
MAX_LINES = 600
#: Files over MAX_LINES that another branch is shrinking (the no-follow walker, issue 18).
def _modules() -> dict:
    """``dotted name -> (path, is a package)`` of every module in apiserver/."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def import_graph() -> dict:
    """``module -> {modules it imports}``, counting every import statement: at the top, under
    ``if TYPE_CHECKING``, inside functions.  A name imported from a package counts as its
    submodule when it is one.  A package's ``__init__`` is a module of its own."""
    modules = _modules()

    def known(name: str):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, (path, package) in modules.items():
        base = name.split(".") if package else name.split(".")[:-1]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module or ""
                module = module.strip(".")
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            else:
                continue
            imported.update(known(t) for t in targets if t.split(".")[0] == "apiserver")
        imported.discard(None)
        imported.discard(name)
        graph[name] = imported
    return graph


def cycles(graph: dict) -> list:
    """The strongly connected components of ``graph`` with more than one member (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _describe(graph: dict, component: list) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return "; ".join(edges)


def test_the_import_graph_of_apiserver_has_no_cycle():
    """No module of apiserver/ imports, however indirectly, one that imports it back (counting
    imports under TYPE_CHECKING and inside functions); the failure lists each cycle's edges."""
    graph = import_graph()
    assert "apiserver.app" in graph and graph["apiserver.app"], "the graph reads no imports: the test is broken"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_top_level_units_do_not_depend_on_each_other_both_ways():
    """Folders and top-level modules (``apiserver.config``, ``apiserver.middleware``, ...) have no
    two-way ties: dependencies between them run one way."""
    graph = import_graph()
    units: dict = {}
    for module, imported in graph.items():
        unit = ".".join(module.split(".")[:2])
        units.setdefault(unit, set()).update(".".join(m.split(".")[:2]) for m in imported)
    ties = sorted(f"{a} <-> {b}" for a, deps in units.items() for b in deps if a < b and a in units.get(b, ()))
    assert not ties, "two-way ties: " + ", ".join(ties)


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a graph with a loop through TYPE_CHECKING-like edges is reported."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _constructors_taking_the_application() -> set:
    """Classes in apiserver/ whose ``__init__`` has a parameter named ``app`` or ``application``."""
    found = set()
    for name, (path, _package) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
                    if names & {"app", "application"}:
                        found.add(f"{name}.{node.name}")
    return found


def test_only_the_service_tree_and_the_internal_path_take_the_application():
    """Besides the application itself, only the service tree that starts it and the one internal
    path of built-in modules take the whole application; every other part takes named
    collaborators.  The design page (docs/design.md) names all three."""
    assert _constructors_taking_the_application() == TAKE_THE_APPLICATION
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for qualified in ("apiserver.app.Application", *sorted(TAKE_THE_APPLICATION)):
        assert qualified.rsplit(".", 1)[1] in design, qualified


def test_the_application_is_assembled_in_its_constructor_only():
    """No module outside app.py sets an attribute on the application (``app.x = ...``) and none
    guards on the build order with ``getattr(app, ..., None)``."""
    offending = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "app.py" and path.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in (r"\b(self\.)?app\.\w+\s*=[^=]", r"getattr\((self\.)?app\b"):
            offending += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not offending, offending


def test_no_file_in_apiserver_is_over_600_lines():
    """Files stay small enough to read whole (one that grows is split along its seams)."""
    long = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
            for path in PACKAGE.rglob("*.py")}
    over = {path: lines for path, lines in long.items() if lines > MAX_LINES}
    assert not over, over
