"""The packages import each other in one direction: dags → pipeline → {glmix_core, retrieval, serving_store}.

Every module's imports are read from its source with ``ast`` (nothing is imported), including imports inside
functions (the pipeline keeps heavy imports local) and ``importlib.import_module("<literal>")`` calls, with
relative imports resolved against the module's package.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dags", "pipeline", "glmix_core", "retrieval", "serving_store")
LIBRARIES = ("glmix_core", "retrieval", "serving_store")

# What each project package may import from the others (itself always allowed; third-party not checked here).
ALLOWED: dict[str, set[str]] = {
    "dags": {"pipeline"},
    "pipeline": set(LIBRARIES),
    "glmix_core": set(),
    # the two service libraries stay independent of each other too
    "retrieval": set(),
    "serving_store": set(),
}


@dataclass(frozen=True)
class Import:
    """One import statement: the importing module, the imported module (absolute), and where."""

    module: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    """Dotted module name of a source file under ROOT (``pkg/__init__.py`` → ``pkg``)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    """Every Python source file of the project packages."""
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return [p for p in files if "__pycache__" not in p.parts]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` (``from . import x`` → the package itself)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> Iterator[Import]:
    """Every import of ``path``, at any depth of the syntax tree."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            yield Import(module, base, path, node.lineno)
            # ``from pkg import sub`` may name a submodule: record pkg.sub too (same top-level package)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(module, f"{base}.{alias.name}", path, node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield Import(module, node.args[0].value, path, node.lineno)


@functools.cache
def all_imports() -> tuple[Import, ...]:
    """Every import of every project module (parsed once per test run)."""
    return tuple(imp for path in source_files() for imp in imports_of(path))


def top(name: str) -> str:
    return name.split(".", 1)[0]


def violations(importer: set[str], imported: set[str]) -> list[str]:
    """One line per import statement of a module of ``importer`` packages that reaches ``imported`` packages."""
    seen: dict[tuple[Path, int], Import] = {}
    for i in all_imports():
        if top(i.module) in importer and top(i.target) in imported:
            seen.setdefault((i.path, i.line), i)
    return [str(i) for i in seen.values()]


def test_the_scan_sees_every_package_and_function_local_imports() -> None:
    files = source_files()
    assert {top(module_name(p)) for p in files} == set(PACKAGES)
    found = all_imports()
    # pipeline.training imports glmix_core only inside functions: the scan must see those
    assert any(i.module == "pipeline.training" and top(i.target) == "glmix_core" for i in found)
    # relative imports resolve to the package's own modules
    assert any(i.module == "glmix_core.model" and i.target == "glmix_core.spec" for i in found)


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = violations({package}, set(PACKAGES) - ALLOWED[package] - {package})
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'no project package'}:\n" + \
        "\n".join(wrong)


def test_no_library_imports_pipeline_or_dags() -> None:
    wrong = violations(set(LIBRARIES), {"pipeline", "dags"})
    assert not wrong, "\n".join(wrong)


def test_glmix_core_imports_nothing_from_the_other_project_packages() -> None:
    wrong = violations({"glmix_core"}, {"retrieval", "serving_store", "pipeline", "dags"})
    assert not wrong, "\n".join(wrong)


# --------------------------------------------------------------------------------------------------------------
# glmix_core's internal structure: no import cycles between its modules
# --------------------------------------------------------------------------------------------------------------


def module_graph(package: str) -> dict[str, set[str]]:
    """Module → the package's modules it imports (function-local imports included; ``from pkg import sub``
    counts as an import of ``pkg.sub`` only, and a package's implicit parent imports are not edges)."""
    modules = {module_name(p) for p in source_files() if top(module_name(p)) == package}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in all_imports():
        if i.module not in modules or top(i.target) != package:
            continue
        target = i.target
        while target not in modules and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in modules and target != i.module:
            graph[i.module].add(target)
    # ``from . import metrics`` records both the package and the submodule: keep the submodule only
    for targets in graph.values():
        for t in list(targets):
            if any(other.startswith(t + ".") for other in targets):
                targets.discard(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_glmix_core_modules_import_each_other_without_cycles() -> None:
    graph = module_graph("glmix_core")
    assert {"glmix_core.pbcd", "glmix_core.fitting", "glmix_core.spark_engine.backend"} <= set(graph)
    assert "glmix_core.pbcd" in graph["glmix_core.fitting"]  # the scan sees the edges it should
    assert cycles(graph) == [], f"import cycles in glmix_core: {cycles(graph)}"
