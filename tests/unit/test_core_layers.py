"""services/core sits under every service: it imports none of them, not even inside a function.

The task services (stt, tts, vad, vc), the router, auth, batches, the store, Wyoming, the
commands and the entry points build on core; the job types their backends batch are core's
(services/core/tasks/jobs.py). The one package core reaches is ``services.weights``, the model
cache that the generic model service fetches a remote source through (it imports only core).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "services" / "core"
BELOW_CORE = {"core", "weights"}  # what core may import: itself, and the model cache that imports only core


def services_above_core() -> list[str]:
    """Every package and module of ``services`` but core and the model cache, as dotted names."""
    return sorted(f"services.{p.stem}" for p in (ROOT / "services").iterdir()
                  if p.stem not in BELOW_CORE and not p.stem.startswith("_")
                  and (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())))


def imported(source: str) -> list[tuple[int, str]]:
    """Every module a source imports (at the top or inside a function), with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
    return found


def reaching_up(path: Path, source: str, above: list[str]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}: {name}" for line, name in imported(source)
            if any(name == up or name.startswith(up + ".") for up in above)]


def test_core_imports_no_service_above_it():
    above = services_above_core()
    assert {"services.stt", "services.tts", "services.vad", "services.vc", "services.router", "services.auth",
            "services.batches", "services.serve"} <= set(above)
    reaching = [hit for path in sorted(CORE.rglob("*.py")) for hit in reaching_up(path, path.read_text(), above)]
    assert reaching == []


def test_an_import_from_a_service_is_caught_even_inside_a_function():
    source = "import numpy\n\n\ndef f():\n    from services.stt.types import SAMPLE_RATE\n    import services.vc.app\n"
    path = CORE / "probe.py"
    assert reaching_up(path, source, services_above_core()) == ["services/core/probe.py:5: services.stt.types",
                                                                "services/core/probe.py:6: services.vc.app"]
