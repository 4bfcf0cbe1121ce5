"""Running the operator against kmock: start kopf, wait for it, poll for results, read what kmock stores."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf
from kopf.testing import KopfRunner

NAMESPACE = "speech"


def watching(kmock: Any, plural: str) -> bool:
    return any(r.method == "GET" and r.params.get("watch") == "true" and f"/{plural}" in str(r.url)
               for r in list(kmock))


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` (without blocking kmock's loop) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (KeyError, IndexError, TypeError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def quiet(kmock: Any, for_s: float = 0.3, at_most_s: float = 5.0) -> None:
    """Wait until the operator has sent no request for ``for_s`` seconds."""
    deadline = time.monotonic() + at_most_s
    seen = len(list(kmock))
    while time.monotonic() < deadline:
        await asyncio.sleep(for_s)
        now = len(list(kmock))
        if now == seen:
            return
        seen = now


@contextlib.asynccontextmanager
async def running_operator(kmock: Any) -> AsyncIterator[KopfRunner]:
    """kopf in its own thread and loop; stopped off this loop, where kmock must keep answering."""
    settings = kopf.OperatorSettings()
    # kmock never bumps resourceVersion, so kopf would wait its whole consistency timeout (5 s)
    # for its own patches to come back before processing (and exiting): keep that short.
    settings.persistence.consistency_timeout = 0.3
    runner = KopfRunner(["run", "-A", "--standalone", "-m", "harmony_operator.handlers"], timeout=60,
                        settings=settings)
    runner.__enter__()
    failed = False
    try:
        for plural in ("speechmodels", "speechroutes", "deployments", "configmaps"):
            await eventually(lambda: watching(kmock, plural), 30, f"kopf to watch {plural}")
        yield runner
        await quiet(kmock)  # stopping kopf mid-handler costs its 5 s wait for hung tasks
    except BaseException:
        failed = True
        raise
    finally:
        await asyncio.get_running_loop().run_in_executor(None, runner.__exit__, None, None, None)
        if failed or os.environ.get("HARMONY_TEST_OPERATOR_LOG"):
            print(runner.output[-30_000:])  # the operator's log: shown with a failure, or on request


def stored(kmock: Any, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    """The object as kmock holds it now (None: never created, or deleted)."""
    try:
        item = kmock.objects[resource, namespace, name]
    except KeyError:
        return None
    return None if item.deleted else copy.deepcopy(dict(item.raw))


def requests(kmock: Any, method: str, fragment: str) -> list[Any]:
    return [r for r in list(kmock) if r.method == method and fragment in str(r.url)]
