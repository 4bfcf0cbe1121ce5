"""The contracts and the operator import nothing heavy: no audio stack, no HTTP stack, no torch.

Every module of ``services/core/contracts/`` and of the operator (``harmony_operator``) is
imported, one after another, in a fresh interpreter; after each the heavy packages in
``sys.modules`` are looked for, so a failure names the first module that pulled one in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "soxr", "starlette", "fastapi", "httpx", "uvicorn", "torch")
PACKAGES = {"services.core.contracts": ROOT / "services" / "core" / "contracts",
            "harmony_operator": ROOT / "operator" / "harmony_operator"}

PROBE = """
import importlib, json, sys
heavy, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for module in modules:
    importlib.import_module(module)
    pulled = sorted(h for h in heavy if h in sys.modules)
    if pulled:
        print(json.dumps({"module": module, "pulled": pulled}))
        break
"""


def light_modules() -> list[str]:
    """Every module of the contracts and the operator, the operator's handlers (what kopf runs) first."""
    names = [f"{package}.{path.stem}" for package, folder in PACKAGES.items() for path in sorted(folder.glob("*.py"))
             if path.stem != "__init__"]
    names.remove("harmony_operator.handlers")
    return ["harmony_operator.handlers", *names]


def heavy_imports(modules: list[str], extra_path: Path | None = None) -> dict | None:
    """The first of ``modules`` after whose import a heavy package is loaded, and which; None when none is."""
    path = [str(ROOT), str(ROOT / "operator"), *([str(extra_path)] if extra_path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY), json.dumps(modules)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_the_operator_and_the_contracts_import_nothing_heavy():
    modules = light_modules()
    assert {"harmony_operator.reconcile", "services.core.contracts.wire", "services.core.contracts.crd"} <= set(modules)
    found = heavy_imports(modules)
    assert found is None, f"{found['module']} imports {', '.join(found['pulled'])}"


def test_a_heavy_import_is_caught_and_named(tmp_path):
    """The check above can fail: a module that imports numpy is named."""
    (tmp_path / "heavy_contract.py").write_text("import numpy\n")
    found = heavy_imports(["services.core.contracts.wire", "heavy_contract"], extra_path=tmp_path)
    assert found == {"module": "heavy_contract", "pulled": ["numpy"]}
