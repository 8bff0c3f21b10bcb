"""The package's import graph: no circle (lazy imports inside functions count too: they only
hide a circle, they do not remove it), `lib` never imports `defs` or `dev`, and the code
location (`defs`, `definitions.py`) never imports the dev tooling."""

from __future__ import annotations

import ast
import subprocess
import sys

from analytics_assets.settings import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "analytics_assets"


def _module(path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """Modules of the package that `module` imports, at any depth of its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from pkg import sub` imports the module pkg.sub; other names come from pkg itself
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {n for n in names if n in MODULES and n != module}
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return out


def test_no_import_circle_in_the_package():
    assert _cycles() == []


def test_lib_imports_neither_defs_nor_dev_and_the_code_location_no_dev_tooling():
    def bad(prefix: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
        return {
            m: sorted(i for i in GRAPH[m] if i.startswith(forbidden))
            for m in GRAPH
            if m.startswith(prefix) and any(i.startswith(forbidden) for i in GRAPH[m])
        }

    assert bad("analytics_assets.lib", ("analytics_assets.defs", "analytics_assets.dev")) == {}
    code_location = ("analytics_assets.defs", "analytics_assets.definitions")
    assert bad(code_location[0], ("analytics_assets.dev",)) == {}
    assert bad(code_location[1], ("analytics_assets.dev",)) == {}


def test_the_graph_sees_imports_inside_functions():
    """The scan itself: cli imports the demo only inside a function."""
    assert "analytics_assets.dev.demo" in GRAPH["analytics_assets.cli"]


def test_every_module_imports_on_its_own():
    """Each module imported with none of the package's modules loaded: an import that works only
    after another module of the package was loaded fails here. One interpreter per module would
    take minutes on two cores, so one child drops the package's modules before each import."""
    script = (
        "import importlib, sys\n"
        "base = set(sys.modules)\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.startswith('analytics_assets')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    modules = sorted(m for m in MODULES if not m.endswith("__main__"))
    proc = subprocess.run(
        [sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
