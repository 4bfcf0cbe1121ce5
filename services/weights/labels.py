"""Sources and URLs in one line, fit for messages, logs and status: no credentials, no query string. Light (the
operator names a model's source with it)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from services.core.contracts.specs import ModelSource


def redact(url: str) -> str:
    """A URL fit for a message: no user info, no query string or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe(source: ModelSource) -> str:
    """The source in one line, e.g. ``hf://Systran/faster-whisper-small@main``."""
    if source.hf:
        pick = f" [{', '.join(source.hf.files)}]" if source.hf.files else ""
        return f"hf://{source.hf.repo}@{source.hf.revision}{pick}"
    if source.url:
        return redact(source.url)
    if source.oci:
        return f"oci://{source.oci}"
    return source.package and f"package {source.package}" or f"path {source.path}"


def human(size: int) -> str:
    """Bytes for people, in SI units: ``412.3 MB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
