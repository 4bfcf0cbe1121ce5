"""An uploaded file's name made safe to keep and to show (pure).

The name a client sends is display metadata only: the bytes live under an object key made of the file's id, never
of its name. Still, the name is echoed (the File object, ``Content-Disposition`` on download) and clients save
files under it, so it is cleaned the way browsers clean a download's name: the last path part only (``/`` and
``\\`` both separate), no control, format or separator characters (no newline, no bidi override), none of
Windows' reserved ``<>:"|?*``, no leading or trailing dots and spaces (``..`` is no name), at most 255 UTF-8 bytes
with its extension kept, and ``file`` when nothing is left.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

MAX_BYTES = 255
FALLBACK = "file"
_RESERVED = set('<>:"|?*')
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def clean_filename(name: str | None) -> str:
    """The name to keep and show for an upload called ``name`` (``../../etc/passwd`` is ``passwd``)."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rstrip("/ ").rsplit("/", 1)[-1]
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in _DROPPED_CATEGORIES:
            continue
        kept.append("_" if char in _RESERVED else " " if category == "Zs" else char)
    text = "".join(kept).strip(". ")
    return _shorten(text) or FALLBACK


def _shorten(name: str) -> str:
    """At most ``MAX_BYTES`` of UTF-8, whole characters, the extension (up to 16 bytes) kept."""
    if len(name.encode()) <= MAX_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension.encode()) > 16:
        stem, extension = name, ""
    room = MAX_BYTES - (len(extension.encode()) + 1 if extension else 0)
    stem = stem.encode()[:room].decode(errors="ignore").rstrip(". ")
    return f"{stem}.{extension}" if extension else stem


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` and, for any other character, RFC 6266's ``filename*``."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name) or FALLBACK
    header = f'attachment; filename="{ascii_name}"'
    if ascii_name != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header
