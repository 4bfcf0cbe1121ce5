"""API keys for tests that run `harmony serve --require-auth`: made with the `harmony keys` command, as an operator
would."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from services.cli import main
from tests.harmony_process import HarmonyProcess


def keys_cli(config_path: Path, *args: str, process: bool = True) -> str:
    """`harmony keys ARGS --config CONFIG_PATH`, its output; a failure fails the test with its stderr.

    ``process=False``: the same command (``services.cli.main``) run in this process, about 0.2 s instead of 1 s (a new
    interpreter and its imports), for tests that read or make keys many times but test something else; its output
    is taken from ``sys.stdout``, so not while other threads print. tests/e2e/test_api_keys.py runs the process."""
    argv = ["keys", *args, "--config", str(config_path)]
    if not process:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        assert code == 0, err.getvalue()
        return out.getvalue()
    done = subprocess.run([sys.executable, "-m", "services.cli", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def create_key(config_path: Path, *args: str, process: bool = True) -> dict:
    """A new key (`harmony keys create --json ARGS`): its record, with the secret under ``key``."""
    return json.loads(keys_cli(config_path, "create", "--json", *args, process=process))


def serve_config(folder: Path, config: dict) -> Path:
    """``config`` as a `harmony serve` config file in ``folder``, with its own data directory there."""
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump({**config, "data_dir": str(folder / "data")}))
    return path


@contextlib.contextmanager
def harmony_requiring_keys(config_path: Path, *args: str) -> Iterator[HarmonyProcess]:
    """`harmony serve --require-auth ARGS` on ``config_path``, stopped cleanly at the end."""
    process = HarmonyProcess(config=str(config_path), extra_args=["--require-auth", *args]).start()
    yield process
    assert process.stop() == 0, process.output()
