"""A real Chromium for the browser tests: Debian's ``chromium``, found on PATH or installed with apt.

Playwright's own browser download cannot reach its servers from here (nor from CI's fresh machines), so the
tests drive the distribution's Chromium through ``executable_path``. On a fresh Debian or Ubuntu machine the
first browser test installs it (``apt-get install chromium``, through sudo when not root); where that is
impossible the tests fail with a message that says what to install, never skip.

``python -m tests.browser`` installs it ahead of time and prints the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PACKAGE = "chromium"
INSTALL_TIMEOUT_S = 900


class ChromiumUnavailable(RuntimeError):
    """No Chromium on PATH and none could be installed."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable on PATH, else None."""
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_prefix() -> list[str]:
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if not sudo:
        raise ChromiumUnavailable(f"Chromium is missing and installing it needs root: run "
                                  f"`apt-get install -y {PACKAGE}` as root (no sudo here)")
    return [sudo, "-n"]  # never prompts: a password prompt would hang the test session


def install_chromium() -> str:
    """Install Debian's chromium package with apt-get; its executable's path."""
    if not shutil.which("apt-get"):
        raise ChromiumUnavailable("Chromium is missing and this machine has no apt-get: install Chromium "
                                  "(or Chrome) so that `chromium` is on PATH")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    prefix = _apt_prefix()
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE]):
        done = subprocess.run(prefix + command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            raise ChromiumUnavailable(f"`{' '.join(prefix + command)}` failed ({done.returncode}):\n"
                                      f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    path = find_chromium()
    if not path:
        raise ChromiumUnavailable(f"apt-get installed {PACKAGE} but no chromium executable is on PATH")
    return path


def chromium_path() -> str:
    """A Chromium executable: the one on PATH, else Debian's package, installed now."""
    return find_chromium() or install_chromium()


def launch_args(microphone_wav: Path | None = None) -> list[str]:
    """Chromium's flags for the tests: headless without a sandbox or GPU, audio that may play without a gesture,
    and, given a wav, a fake microphone that plays it (and is allowed without a prompt)."""
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"]
    if microphone_wav is not None:
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone_wav}"]
    return args


@dataclass
class Problems:
    """What went wrong on a page: console errors, uncaught exceptions, failed requests, 4xx/5xx answers."""

    seen: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.seen.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.seen.append(f"exception: {e}"))
        page.on("requestfailed", lambda r: self.seen.append(f"failed: {r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: self.seen.append(f"{r.status}: {r.request.method} {r.url}")
                if r.status >= 400 else None)

    def assert_none(self) -> None:
        assert not self.seen, "\n".join(self.seen)


if __name__ == "__main__":
    print(chromium_path())
