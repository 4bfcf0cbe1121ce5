"""Which items of a running batch someone still waits for, so a backend can drop the rest between its steps.

A batch runs in a worker thread and cannot be interrupted, but some batches run in several steps: Whisper decodes
its windows again at each temperature of its fallback ladder (best of 5 each), and decodes again the windows that
failed a fitted context or a packed window. A caller that went away (its HTTP client disconnected, so its task and
the batcher's future for its item were cancelled), or gave up at its deadline, will never read its item's result,
so the steps still to come for that item are work for nobody.

The batcher hands a backend that asks for it (a ``run_batch`` that takes a ``wanted`` keyword) a ``Wanted``: called
with an item's index in the batch, it says whether anyone still waits for that item. The backend asks before each
step and leaves out the items nobody wants, answering them ``Abandoned`` (the batcher never delivers that answer:
their futures are done already). A backend without the parameter is called as before.

``BatchWanted`` reads the state of the items' asyncio futures from the worker thread: a future only ever goes from
pending to done, and reading its state is atomic under the GIL, so a stale answer only keeps an item for one more
step.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Wanted(Protocol):
    """``wanted(i)``: whether the caller of item ``i`` of the batch still waits for its result."""

    def __call__(self, index: int) -> bool: ...


def all_wanted(index: int) -> bool:
    """The ``Wanted`` of a batch run outside a batcher: every item is wanted."""
    return True


class Abandoned(Exception):
    """The answer of an item a backend dropped because nobody waited for it any more (never delivered)."""

    def __init__(self) -> None:
        super().__init__("dropped: its caller went away")


class BatchWanted:
    """The ``Wanted`` of one batch: an item is wanted while its future is not done (cancelled, or timed out)."""

    def __init__(self, futures: Sequence[asyncio.Future]) -> None:
        self._futures = list(futures)

    def __call__(self, index: int) -> bool:
        return not self._futures[index].done()


def takes_wanted(run_batch: Callable[..., Any]) -> bool:
    """Whether ``run_batch`` accepts the ``wanted`` keyword (a plugin's may not: it is then called without it)."""
    try:
        parameters = inspect.signature(run_batch).parameters
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return "wanted" in parameters
