"""The package's import graph points one way: the signal layer imports no other ecgjax package,
nothing below the applications imports `ecgjax.annotate`, and the modules of `ecgjax.data` import
each other without a cycle (function-level imports included: they are cycles that merely wait)."""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ecgjax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every ecgjax module `path` imports, anywhere in the file ('from a import b' counts a.b when
    a.b is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / child.replace(".", "/")).with_suffix(".py").is_file() or (
                    PACKAGE.parent / child.replace(".", "/") / "__init__.py").is_file()
                found.add(child if is_module else node.module)
    return {name for name in found if name == "ecgjax" or name.startswith("ecgjax.")}


GRAPH = {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_is_read_from_the_source():
    # Guards the checks below against a parser that finds nothing.
    assert "ecgjax.signal.heart_rate" in GRAPH["ecgjax.data.beats"]
    assert "ecgjax.data.store" in GRAPH["ecgjax.data.ingest"]


def test_the_signal_layer_imports_only_itself():
    outside = {module: sorted(name for name in imports if not _in(name, "ecgjax.signal"))
               for module, imports in GRAPH.items() if _in(module, "ecgjax.signal")}
    assert outside and not any(outside.values()), outside


def test_only_annotate_imports_annotate():
    upward = {module: sorted(name for name in imports if _in(name, "ecgjax.annotate"))
              for module, imports in GRAPH.items() if not _in(module, "ecgjax.annotate")}
    assert not any(upward.values()), {k: v for k, v in upward.items() if v}


@pytest.mark.parametrize("package", ["ecgjax.data", "ecgjax.signal"])
def test_no_import_cycle_within(package):
    edges = {module: {name for name in imports if _in(name, package) and name != module}
             for module, imports in GRAPH.items() if _in(module, package)}
    done: set[str] = set()

    def visit(module, path):
        assert module not in path, " -> ".join([*path[path.index(module):], module])
        if module in done:
            return
        for name in sorted(edges.get(module, ())):
            visit(name, [*path, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
