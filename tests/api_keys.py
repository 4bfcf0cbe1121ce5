"""API keys for tests that run `harmony serve --require-auth`: made with the `harmony keys` command, as an operator
would."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.harmony_process import HarmonyProcess


def keys_cli(config_path: Path, *args: str) -> str:
    """`harmony keys ARGS --config CONFIG_PATH`, its output; a failure fails the test with its stderr."""
    done = subprocess.run([sys.executable, "-m", "services.cli", "keys", *args, "--config", str(config_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(config_path: Path, *args: str) -> dict:
    """A new key (`harmony keys create --json ARGS`): its record, with the secret under ``key``."""
    return json.loads(keys_cli(config_path, "create", "--json", *args))


def serve_config(folder: Path, config: dict) -> Path:
    """``config`` as a `harmony serve` config file in ``folder``, with its own data directory there."""
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump({**config, "data_dir": str(folder / "data")}))
    return path


@contextlib.contextmanager
def harmony_requiring_keys(config_path: Path) -> Iterator[HarmonyProcess]:
    """`harmony serve --require-auth` on ``config_path``, stopped cleanly at the end."""
    process = HarmonyProcess(config=str(config_path), extra_args=["--require-auth"]).start()
    yield process
    assert process.stop() == 0, process.output()
