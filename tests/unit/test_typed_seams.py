"""The tree type-checks: every service calls only what its task's protocol names, wire types match, and the rest
of ``services`` and the operator are checked the same way (mypy, with pyproject.toml's [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["services", "operator/harmony_operator"]
# mypy's incremental cache, kept between runs (.cache/ is git-ignored): a warm run rechecks only what changed.
# Each check has its own, as mypy rewrites a module's cache entry when the options it was checked with differ.
CACHE = ROOT / ".cache" / "mypy"


def mypy(*paths: str, cache: Path, follow: str = "normal") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", f"--follow-imports={follow}", "--cache-dir", str(cache),
                           "--no-error-summary", *paths], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_services_and_the_operator_type_check():
    done = mypy(*CHECKED, cache=CACHE / "tree")
    assert done.returncode == 0, done.stdout + done.stderr


def test_reaching_past_a_task_protocol_is_a_type_error(tmp_path):
    """The check above can fail: an STT model's backend has no voices(), so asking for them is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("from services.core.tasks.protocols import SttBackend\n"
                     "from services.core.http.service_app import LoadedModel\n\n\n"
                     "def voices(model: LoadedModel[SttBackend]) -> object:\n"
                     "    return model.backend.voices()\n")
    done = mypy(str(probe), cache=CACHE / "probe", follow="silent")
    assert done.returncode == 1 and '"SttBackend" has no attribute "voices"' in done.stdout, done.stdout
