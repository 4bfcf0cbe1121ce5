"""The tree lints clean: ruff, with the rules pyproject.toml's [tool.ruff] names, over the code we write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINTED = ["services", "operator", "tests", "bench"]


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # ruff is installed beside the interpreter (the test extra); `python -m ruff` finds its binary there
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_tree_lints_clean():
    done = ruff(*LINTED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_lint_can_fail(tmp_path):
    """The check above can fail: with the project's configuration, out-of-order imports and an unused one are caught."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    probe = tmp_path / "services" / "probe.py"
    probe.parent.mkdir()
    probe.write_text('"""A probe."""\n\nimport services.core\nimport json\nimport os\n\nprint(json, services.core)\n')
    done = ruff("services", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "I001" in done.stdout and "F401" in done.stdout, done.stdout
