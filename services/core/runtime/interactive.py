"""Whether interactive work is in flight in a process, in any of its batchers, and when the last of it ended.

Batch-priority work (``X-Harmony-Priority: batch``) starts only in the quiet between interactive work: the models of
one process share its cores, so a batch item computing beside an interactive one slows it down, and one that starts
just before an interactive item arrives makes it wait (a batch is never interrupted). The state is derived from the
batchers' own (queued and computing items), so nothing can leak a count.

One ``InteractiveActivity`` serves all the batchers of a process (``harmony serve`` runs several model services in
one): ``INTERACTIVE``, which the code that builds the batchers passes them (``services.core.http.service_app``); a
test gives its batchers one of their own, or shares this one.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Protocol

QUIET_S = 0.25  # batch-priority work starts only once interactive work has been quiet this long


class Batcher(Protocol):
    def interactive_in_flight(self) -> bool:
        """Interactive items queued or computing there."""


class InteractiveActivity:
    """The interactive work in flight in the batchers that ``join`` it, and when the last of it ended."""

    def __init__(self) -> None:
        self._batchers: weakref.WeakSet[Batcher] = weakref.WeakSet()
        self.last_end = -math.inf

    def join(self, batcher: Batcher) -> None:
        """Count ``batcher``'s interactive work (for as long as it exists)."""
        self._batchers.add(batcher)

    def ended(self) -> None:
        """An interactive batch ended just now."""
        self.last_end = time.monotonic()

    def quiet_in(self) -> float:
        """Seconds until batch-priority work may start; 0 when it may now."""
        if any(b.interactive_in_flight() for b in list(self._batchers)):
            return QUIET_S
        return max(0.0, self.last_end + QUIET_S - time.monotonic())


INTERACTIVE = InteractiveActivity()  # the process's own: every batcher of the process shares its cores
