"""The engine's logging: what each line costs the reader at night decides its level."""

from __future__ import annotations

import logging

CLIENT_LOGGERS = ("httpx", "httpcore")


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
