"""The engine's logging: what each line costs the reader at night decides its level.

Every process (``harmony serve``, the router, a model service) logs through ``configure_logging``: ``text`` lines for
a terminal, or ``json``, one object per line with a stable schema (``JsonFormatter``: level, time, logger,
request_id, model, message, and exc when there is an exception) for a log pipeline; the format from
``--log-format``, else ``$HARMONY_LOG_FORMAT``, else the config's ``server.log_format``. The level is set per logger
(``--log-level info,harmony.router=debug,uvicorn.access=warning``, ``$HARMONY_LOG_LEVEL``, ``server.log_level``).
A line's request id and model come from the request field ``LOG_CONTEXT``, bound for each request by the middleware
that learns them (the router's ``AuthAuditMiddleware``; a model service's ``TimingHeaders``, from the
``x-request-id`` the router forwards). Nothing of a request's content is ever logged: no text, audio, prompt or key.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Literal

from services.core.runtime.request_state import RequestField

CLIENT_LOGGERS = ("httpx", "httpcore")
# libraries whose DEBUG lines carry request content (python-multipart logs the bytes of form parts)
CONTENT_LOGGERS = ("multipart", "python_multipart")
LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMAT_ENV, LEVEL_ENV = "HARMONY_LOG_FORMAT", "HARMONY_LOG_LEVEL"


@dataclass
class LogContext:
    """What a log line says about the request it was written for."""

    request_id: str | None = None
    model: str | None = None


LOG_CONTEXT: RequestField[LogContext] = RequestField(
    "log_context", "the request id and model written on each log line (AuthAuditMiddleware, TimingHeaders)")

_configured: dict[str, int] = {}  # the levels configure_logging set, by logger ("" the root), for reapply_levels


def request_id_header() -> list[tuple[bytes, bytes]]:
    """The current request's id as an ``x-request-id`` header line (for its calls to model services), if any."""
    context = LOG_CONTEXT.get()
    return [(b"x-request-id", context.request_id.encode("latin-1"))] if context and context.request_id else []


def note_model(model: str | None) -> None:
    """The current request's model, from now on in its log lines."""
    context = LOG_CONTEXT.get()
    if context is not None and model:
        context.model = model


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``level``, ``time`` (RFC 3339, UTC, milliseconds), ``logger``, ``request_id``,
    ``model``, ``message``, and ``exc`` (the traceback) when the line carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        context = LOG_CONTEXT.get()
        line: dict[str, str | None] = {
            "level": record.levelname.lower(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "logger": record.name,
            "request_id": context.request_id if context else None,
            "model": context.model if context else None,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


def parse_levels(spec: str) -> dict[str, int]:
    """``info,harmony.router=debug,uvicorn.access=warning``: a bare level is the root's (default info), each
    ``logger=level`` that logger's (and its children's). ValueError names what is wrong."""
    levels = {"": logging.INFO}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, level = part.rpartition("=")
        if level.lower() not in LEVELS or (part.count("=") > 1) or ("=" in part and not name.strip()):
            raise ValueError(f"log level {part!r}: use LEVEL or LOGGER=LEVEL, a level one of {', '.join(LEVELS)}")
        levels[name.strip()] = logging.getLevelName(level.upper())
    return levels


def root_level_name(spec: str) -> str:
    """The root's level of a ``--log-level`` spec, as uvicorn takes it (``info``)."""
    return logging.getLevelName(parse_levels(spec)[""]).lower()


def chosen_format(flag: str | None, configured: str | None = None) -> LogFormat:
    """The flag, else ``$HARMONY_LOG_FORMAT``, else the config's, else text."""
    value = (flag or os.environ.get(FORMAT_ENV) or configured or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"log format {value!r}: one of {', '.join(FORMATS)}")
    return value  # type: ignore[return-value]


def chosen_levels(flag: str | None, configured: str | None = None) -> str:
    """The flag, else ``$HARMONY_LOG_LEVEL``, else the config's, else info."""
    return flag or os.environ.get(LEVEL_ENV) or configured or "info"


def say_json(message: str, logger: str = "harmony.serve") -> None:
    """One of ``harmony serve``'s own messages (starting, ready, stopping) as a JSON line on stdout, whatever the
    level: what a terminal user reads as plain text, a log pipeline reads in the schema."""
    record = logging.makeLogRecord({"name": logger, "levelname": "INFO", "levelno": logging.INFO, "msg": message})
    print(JsonFormatter().format(record), flush=True)


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level`` for a command that serves (``harmony serve``, the router, a service)."""
    parser.add_argument("--log-format", choices=FORMATS, default=None,
                        help=f"text lines or JSON lines (default: ${FORMAT_ENV}, else the config's server.log_format, "
                             "else text)")
    parser.add_argument("--log-level", default=None, type=_checked_levels, metavar="LEVELS",
                        help="a level (debug, info, warning, error), then LOGGER=LEVEL for any logger: "
                             f"info,harmony.router=debug,uvicorn.access=warning (default: ${LEVEL_ENV}, else the "
                             "config's server.log_level, else info)")


def _checked_levels(spec: str) -> str:
    try:
        parse_levels(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return spec


def configure_from(log_format: str | None, levels: str | None, configured_format: str | None = None,
                   configured_levels: str | None = None) -> str:
    """Logging configured from the flags (None: not given), the environment and the config; the root level's name
    (for uvicorn)."""
    chosen = chosen_levels(levels, configured_levels)
    configure_logging(chosen_format(log_format, configured_format), chosen)
    return root_level_name(chosen)


def configure_logging(log_format: LogFormat = "text", levels: str = "info", stream: IO[str] | None = None) -> None:
    """The root logger writes ``log_format`` lines to ``stream`` (stderr) at the levels of ``levels``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    _configured.clear()
    _configured.update(parse_levels(levels))
    reapply_levels()
    _structured[0] = log_format == "json"
    quiet_http_client_logs()
    for name in CONTENT_LOGGERS:
        if name not in _configured:
            logging.getLogger(name).setLevel(logging.INFO)


_structured = [False]


def structured() -> bool:
    """Whether this process logs JSON lines (then uvicorn's loggers go to the root's handler, not their own)."""
    return _structured[0]


def reapply_levels() -> None:
    """Set the configured levels again (uvicorn sets its loggers' levels when a server is built)."""
    for name, level in _configured.items():
        logging.getLogger(name or None).setLevel(level)


def quiet_http_client_logs() -> None:
    """httpx logs every request it makes at INFO ("HTTP Request: GET http://127.0.0.1:.../readyz 200 OK"): the
    router's own calls to its model services, one line per model for each ``/readyz``. They go to WARNING unless
    the engine logs at DEBUG, or someone already chose a level for these loggers."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
