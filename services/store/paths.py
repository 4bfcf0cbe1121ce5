"""The engine's data directory (state that must survive a restart), after the XDG convention."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(configured: str | None = None) -> Path:
    """``configured`` (the config's ``data_dir``), else $HARMONY_DATA_DIR, else $XDG_DATA_HOME/harmony."""
    root = configured or os.environ.get("HARMONY_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share")), "harmony")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
