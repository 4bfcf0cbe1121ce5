"""When a call to a model's replica may be tried again on another replica, and when the replica is ejected.

A call is tried again, on a replica it has not tried yet, at most ``MAX_ATTEMPTS`` times in all, only while
nothing of its answer has reached the router's client (the router reads a whole answer before it answers,
and a streamed one is retried only before it is handed on), and only when the replica did not start the work
or the work may be repeated:

- the connection was refused or could not be made (``ConnectError``, ``ConnectTimeout``): the request never
  left; the replica is ejected (a pod that died, or stopped listening as it drains);
- the replica answered 429 (its queue is full, or it cannot finish in time) or 503 (it is draining, or its
  model is not loaded yet): it refused before starting; another replica may have room. Not ejected: a busy
  replica is not a failed one, and a draining one leaves the EndpointSlice within seconds;
- the connection broke before the answer was complete (``ReadError``, ``RemoteProtocolError``, ...): the
  replica died with the request in flight. Ejected; retried only when the call is ``replayable`` (model
  inference is: it has no effect but its answer; registering a voice is not).

A timeout is never retried (the replica is slow, not gone: a second try would double the load) and ejects
nothing. When no other replica is left to try, the last answer or error stands.
"""

from __future__ import annotations

from enum import Enum

import httpx

MAX_ATTEMPTS = 3
REFUSED_STATUSES = frozenset({429, 503})  # answers of a replica that did not start the work


class Verdict(Enum):
    GIVE_UP = "give up"  # answer with this error
    RETRY = "retry"  # try another replica
    EJECT_AND_RETRY = "eject and retry"  # the replica failed: eject it, then try another


def after_error(exc: httpx.TransportError, replayable: bool) -> Verdict:
    """What to do after ``exc`` from one replica (retry meaning: if another replica is left)."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Verdict.EJECT_AND_RETRY
    if isinstance(exc, httpx.TimeoutException):
        return Verdict.GIVE_UP
    return Verdict.EJECT_AND_RETRY if replayable else Verdict.GIVE_UP


def after_status(status: int) -> Verdict:
    return Verdict.RETRY if status in REFUSED_STATUSES else Verdict.GIVE_UP


def ejects(exc: httpx.TransportError) -> bool:
    """Whether ``exc`` means the replica failed (whether or not the call may be tried again)."""
    return not isinstance(exc, httpx.TimeoutException) or isinstance(exc, httpx.ConnectTimeout)

