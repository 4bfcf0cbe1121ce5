"""The repository's layout: nothing shadows the standard library, imports resolve by path, functions stay small."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where a tool that resolves imports by path looks: the root, and the operator's folder (pyproject's
# packages.find `where`; `operator/` itself is not a package).
SOURCE_ROOTS = [ROOT, ROOT / "operator"]
CODE = ["services", "operator", "tests", "bench", "examples"]
MAX_FUNCTION_LINES = 60


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py")
                  if ".venv" not in p.parts and "build" not in p.parts)


def test_no_root_folder_shadows_a_standard_library_module():
    shadowing = [p.name for p in ROOT.iterdir() if p.is_dir() and p.name in sys.stdlib_module_names
                 and ((p / "__init__.py").exists() or any(p.glob("*.py")))]
    assert shadowing == []


def test_python_runs_from_the_repository_root():
    for code in ("import json, operator; assert operator.__file__ is None or 'lib' in operator.__file__",
                 "import services.core.contracts.specs, harmony_operator.manifests"):
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def _module_name(path: Path) -> str:
    for root in sorted(SOURCE_ROOTS, key=lambda r: -len(r.parts)):
        if root in path.parents:
            parts = path.relative_to(root).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


def _by_path(module: str) -> Path | None:
    """Where a tool that knows only the source roots finds ``module``."""
    for root in SOURCE_ROOTS:
        base = root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("services", "harmony_operator", "tests", "bench")}


def test_imports_resolve_by_path_to_the_files_python_imports():
    """Every project import, resolved by path alone, lands on the file Python itself imports."""
    checked = 0
    for path in python_files("services", "operator", "tests"):
        for module in _project_imports(path):
            spec = importlib.util.find_spec(module) if _is_module(module) else None
            if spec is None or spec.origin is None:
                continue  # a name imported from a module (a class, a function), not a module
            assert _by_path(module) == Path(spec.origin).resolve(), f"{path}: {module}"
            checked += 1
    assert checked > 200


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def test_no_function_is_over_60_lines():
    long = []
    for path in python_files("services", "operator"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


# The import graph of services: its packages import one another without cycles, and each module imports only
# from its own layer and those below it. Lowest first; a module's layer is its longest prefix here. Imports inside
# functions (lazy ones) count as much as those at the top of a module; those under `if TYPE_CHECKING:` do not.
LAYERS: list[tuple[str, ...]] = [
    ("services.core.contracts",),   # what crosses a process: pure pydantic, yaml, the standard library
    ("services.core.audio",),
    ("services.core.tasks",),       # what a backend is: protocols, jobs, the registry
    ("services.core.runtime",),     # how a model runs in its process: batching, timing, metrics, CPUs
    ("services.weights",),          # weights from anywhere into the cache (a model service fetches on load)
    ("services.core.http",),        # servers, the service client, the generic model service
    ("services.store",),
    ("services.auth",),
    ("services.stt", "services.tts", "services.vad", "services.vc"),
    ("services.model_services",),   # which service serves each task
    ("services.batches",),
    ("services.router.routing", "services.router.access", "services.router.cluster"),
    ("services.router.upstream",),
    ("services.router.pipelines", "services.router.voices", "services.router.realtime",
     "services.router.diarization"),
    ("services.router.api", "services.router.service_metrics"),
    ("services.playground",),
    ("services.router.app",),
    ("services.wyoming",),          # the Wyoming adapter, a client of the engine's HTTP API
    ("services.service_main", "services.router_main", "services.serve", "services.commands", "services.keys_cli",
     "services.cli"),               # the entry points
]
# Modules of the packages whose modules sit in different layers are graph nodes of their own (services.serve,
# services.router.app); elsewhere a module's node is its package (services.core.http, services.router.api).
SPLIT_PACKAGES = ("services", "services.router")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    path: Path
    line: int
    target: str  # the module imported (a name imported from a module counts as that module)
    lazy: bool   # inside a function


def _as_module(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the repository (``services.x.Class`` -> ``services.x``)."""
    while name and _by_path(name) is None:
        name = name.rpartition(".")[0]
    return name


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def imports_of(path: Path, module: str) -> list[Import]:
    """The project imports of one file, with their lines and whether they run lazily; not those under
    ``if TYPE_CHECKING:``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, lazy)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _imported(child, package):
                    target = _as_module(name)
                    if target.split(".")[0] == "services":
                        found.append(Import(module, path, child.lineno, target, lazy))
            else:
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def services_imports() -> list[Import]:
    return [i for path in python_files("services") for i in imports_of(path, _module_name(path))]


def package_node(module: str) -> str:
    path = _by_path(module)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    return module if package in SPLIT_PACKAGES and module != package else package


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph ``edges`` (its nodes in order, the first repeated last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for after in sorted(edges.get(node, ())):
            cycle = walk(after)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    return next((cycle for node in sorted(edges) if (cycle := walk(node))), None)


def package_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Package -> the packages its modules import when they are imported (module-level imports only)."""
    edges: dict[str, set[str]] = {}
    for i in imports:
        source, target = package_node(i.source), package_node(i.target)
        if not i.lazy and source != target:
            edges.setdefault(source, set()).add(target)
    return edges


def layer_of(module: str, layers: list[tuple[str, ...]] = LAYERS) -> tuple[int, str] | None:
    """(layer index, the prefix it matched) of ``module``: its longest prefix in ``layers``."""
    matches = [(len(prefix), rank, prefix) for rank, layer in enumerate(layers) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1:] if matches else None


def upward_imports(imports: list[Import], layers: list[tuple[str, ...]] = LAYERS) -> list[str]:
    """Each import of a module from a higher layer than its own, as ``file:line imports target (lower < higher)``."""
    found = []
    for i in imports:
        source, target = layer_of(i.source, layers), layer_of(i.target, layers)
        if source is not None and target is not None and target[0] > source[0]:
            found.append(f"{i.path.relative_to(ROOT)}:{i.line} imports {i.target}{' (lazily)' if i.lazy else ''}: "
                         f"{source[1]} is below {target[1]}")
    return found


def test_no_import_cycles_among_the_packages_of_services():
    cycle = find_cycle(package_graph(services_imports()))
    assert cycle is None, " -> ".join(cycle or [])


def test_a_package_cycle_is_found():
    """The check above can fail: a cycle of three packages is found and named in order."""
    edges = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set()}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_every_module_of_services_has_a_layer():
    """A new package is placed in LAYERS; only the namespaces above the layers (services, services.core,
    services.router: docstrings, no imports) and the package of data files are outside them."""
    outside = {_module_name(p) for p in python_files("services") if layer_of(_module_name(p)) is None}
    assert outside == {"services", "services.core", "services.router", "services.defaults"}


def test_no_module_imports_from_a_higher_layer():
    found = upward_imports(services_imports())
    assert found == [], "\n".join(found)


def test_an_import_from_a_higher_layer_is_found(tmp_path):
    """The check above can fail: a contract that imports the router, even inside a function, is named with its
    file and line; the same import under ``if TYPE_CHECKING:`` is not a dependency at run time."""
    probe = ROOT / "services" / "core" / "contracts" / "probe.py"  # named as if there; written in tmp_path
    path = tmp_path / "probe.py"
    path.write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from services.router import app\n\n\n"
                    "def late():\n    from services.router.app import create_app\n    return create_app\n")
    found = upward_imports([replace(i, path=probe) for i in imports_of(path, "services.core.contracts.probe")])
    assert found == ["services/core/contracts/probe.py:8 imports services.router.app (lazily): "
                     "services.core.contracts is below services.router.app"]
