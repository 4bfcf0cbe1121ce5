"""The repository's layout: nothing shadows the standard library, imports resolve by path, functions stay small."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
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
