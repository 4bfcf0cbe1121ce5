"""API keys for tests that run `harmony serve --require-auth`: made with the `harmony keys` command, as an operator would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def keys_cli(config_path: Path, *args: str) -> str:
    """`harmony keys ARGS --config CONFIG_PATH`, its output; a failure fails the test with its stderr."""
    done = subprocess.run([sys.executable, "-m", "services.cli", "keys", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(config_path: Path, *args: str) -> dict:
    """A new key (`harmony keys create --json ARGS`): its record, with the secret under ``key``."""
    return json.loads(keys_cli(config_path, "create", "--json", *args))
