"""A real Chromium for the browser tests: Debian's ``chromium``, found on PATH or installed with apt.

Playwright's own browser download cannot reach its servers from here (nor from CI's fresh machines), so the
tests drive the distribution's Chromium through ``executable_path``. On a fresh Debian or Ubuntu machine the
first browser test installs it (``apt-get install chromium``, through sudo when not root: tests/debian.py);
where that is impossible the tests fail with a message that says what to install, never skip.

``python -m tests.browser`` installs it ahead of time and prints the path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import debian

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PACKAGE = "chromium"
INSTALL_TIMEOUT_S = debian.INSTALL_TIMEOUT_S
HOW = {"what": "Chromium", "without_apt": "install Chromium (or Chrome) so that `chromium` is on PATH"}


class ChromiumUnavailable(debian.PackageUnavailable):
    """No Chromium on PATH and none could be installed."""


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable on PATH, else None."""
    return debian.find_executable(NAMES)


def install_chromium() -> str:
    """Install Debian's chromium package with apt-get; its executable's path."""
    return debian.install_package(NAMES, PACKAGE, error=ChromiumUnavailable, **HOW)


def chromium_path() -> str:
    """A Chromium executable: the one on PATH, else Debian's package, installed now."""
    return debian.ensure_package(NAMES, PACKAGE, error=ChromiumUnavailable, **HOW)


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
