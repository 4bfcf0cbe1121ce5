"""Debian packages the tests need (a real Chromium, a real OCI registry): found on PATH or installed with apt.

On a fresh Debian or Ubuntu machine (CI) the first test that needs one installs it (``apt-get install``, through
``sudo -n`` when not root: a password prompt would hang the session); where that is impossible the tests fail
with a message that says what to install, never skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

INSTALL_TIMEOUT_S = 900


class PackageUnavailable(RuntimeError):
    """The executable is not on PATH and its package could not be installed."""


def find_executable(names: Sequence[str]) -> str | None:
    """The path of the first of ``names`` on PATH, else None."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_prefix(package: str, what: str, error: type[PackageUnavailable]) -> list[str]:
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if not sudo:
        raise error(f"{what} is missing and installing it needs root: run "
                    f"`apt-get install -y {package}` as root (no sudo here)")
    return [sudo, "-n"]  # never prompts: a password prompt would hang the test session


def install_package(executable_names: Sequence[str], package: str, *, what: str | None = None,
                    without_apt: str | None = None, error: type[PackageUnavailable] = PackageUnavailable) -> str:
    """Install Debian's ``package`` with apt-get; the path of its executable (the first of ``executable_names``
    found). ``what`` names it in messages, ``without_apt`` says what to do on a machine without apt-get."""
    what = what or package
    if not shutil.which("apt-get"):
        raise error(f"{what} is missing and this machine has no apt-get: "
                    f"{without_apt or f'install {package} so that `{executable_names[0]}` is on PATH'}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    prefix = _apt_prefix(package, what, error)
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]):
        done = subprocess.run(prefix + command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            raise error(f"`{' '.join(prefix + command)}` failed ({done.returncode}):\n"
                        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    path = find_executable(executable_names)
    if not path:
        raise error(f"apt-get installed {package} but no {executable_names[0]} executable is on PATH")
    return path


def ensure_package(executable_names: Sequence[str], package: str, **how) -> str:
    """The path of the first of ``executable_names`` on PATH, else of the one Debian's ``package`` installs now
    (``how``: install_package's ``what``, ``without_apt`` and ``error``)."""
    return find_executable(executable_names) or install_package(executable_names, package, **how)


if __name__ == "__main__":
    import sys

    print(ensure_package(sys.argv[2:] or [sys.argv[1]], sys.argv[1]))
