"""The seams type-check: every service calls only what its task's protocol names, and wire types match."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ["services/core/http/service_app.py", "services/core/tasks/backends.py", "services/core/tasks/protocols.py",
           "services/core/contracts/wire.py", "services/model_services.py", "services/stt/app.py", "services/tts/app.py",
           "services/vad/app.py", "services/vc/app.py", "services/router/pipelines.py", "services/router/api",
           "services/router/realtime",
           "operator/harmony_operator/status.py", "operator/harmony_operator/manifests.py"]


def mypy(*paths: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(cache),
                           "--no-error-summary", *paths], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_services_and_contracts_type_check(tmp_path):
    done = mypy(*CHECKED, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr


def test_reaching_past_a_task_protocol_is_a_type_error(tmp_path):
    """The check above can fail: an STT model's backend has no voices(), so asking for them is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("from services.core.tasks.protocols import SttBackend\n"
                     "from services.core.http.service_app import LoadedModel\n\n\n"
                     "def voices(model: LoadedModel[SttBackend]) -> object:\n"
                     "    return model.backend.voices()\n")
    done = mypy(str(probe), cache=tmp_path / "cache")
    assert done.returncode == 1 and '"SttBackend" has no attribute "voices"' in done.stdout, done.stdout
