"""What a request carries through a process besides its arguments, declared in one place.

Some state belongs to the request rather than to any one call: the calls that read it are many layers below the
middleware that learns it (a model service's batcher reads the deadline the router gave the request). Each such
piece is a ``RequestField``: typed, named, documented, set by the middleware that owns it (``bound``, for the
request's duration) and read through accessors named for it. Python's context variables carry it: a value bound for
a request is seen by every call and every task started inside it, and by nothing else (a task works on a copy of
its creator's context). No module of this project makes a context variable any other way (a unit test checks).

The fields, each declared by the layer that owns it (core knows only its own; a higher layer adds its fields with
``RequestField`` without core knowing them); ``declared()`` lists those imported so far:

- ``timing`` (here, ``TIMING``): a model-service request's queue and compute time, its deadline and its priority in
  the batchers; set by ``services.core.runtime.timing.TimingHeaders``, read through that module's ``current``,
  ``deadline``, ``priority`` and ``record``.
- ``client_call`` (``services.router.upstream.admission.CLIENT_CALL``): the deadline and priority a client announced
  to the router, for every model call made on its behalf; set by ``ClientDeadline`` (or ``call_as``, for a task the
  router starts itself), read through ``deadline_header`` and ``client_remaining_s``.
- ``request_record`` (``services.auth.guard.REQUEST_RECORD``): the router request's audit record (its API key, its
  usage, its quota holds); set by ``services.auth.middleware.AuthAuditMiddleware``, read through the guard's
  functions (``note_usage``, ``check_model``, ``reserve_audio``, ...).

A batch line's API key is no request state: the batch runner passes it with the request it makes (see
``services.batches.dispatch``). The one piece of process-wide state the batchers share is
``services.core.runtime.interactive.InteractiveActivity``, which the code building them passes in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DECLARED: dict[str, RequestField[Any]] = {}


class RequestField(Generic[T]):
    """One piece of per-request state: unset (None) outside a request that carries it."""

    name: str
    doc: str

    def __init__(self, name: str, doc: str) -> None:
        if name in _DECLARED:
            raise ValueError(f"request field {name!r} is already declared: {_DECLARED[name].doc}")
        self.name = name
        self.doc = doc
        self._var: ContextVar[T | None] = ContextVar(f"harmony_{name}", default=None)
        _DECLARED[name] = self

    def get(self) -> T | None:
        """The current request's value, or None when none was bound."""
        return self._var.get()

    @contextmanager
    def bound(self, value: T) -> Iterator[T]:
        """``value`` for the code inside the block (and the tasks it starts); the previous value after it."""
        token = self._var.set(value)
        try:
            yield value
        finally:
            self._var.reset(token)

    def set(self, value: T | None) -> Token[T | None]:
        """``value`` from now on in the current task (a task of its own, whose context nobody else sees); ``reset``
        with the token gives back the previous value."""
        return self._var.set(value)

    def reset(self, token: Token[T | None]) -> None:
        self._var.reset(token)

    def __repr__(self) -> str:
        return f"RequestField({self.name!r})"


def declared() -> dict[str, RequestField[Any]]:
    """Every request field declared by the modules imported so far, by name."""
    return dict(_DECLARED)


@dataclass
class RequestTiming:
    """A model-service request's time so far, and what its caller (the router) said about it."""

    queue_s: float = 0.0
    compute_s: float = 0.0
    deadline: float | None = None  # time.monotonic() by which the caller wants the answer, if it said
    span: float | None = None  # the seconds it gave: a streamed answer's deadline moves on by this with each part
    priority: int = 0  # the batcher's priority for its items (lower goes first)

    def renew(self) -> None:
        """A part of a streamed answer left: its caller, reading as it comes, waits ``span`` for the next."""
        if self.span is not None and self.deadline is not None:
            self.deadline = max(self.deadline, time.monotonic() + self.span)


TIMING: RequestField[RequestTiming] = RequestField(
    "timing", "a model-service request's queue and compute time, deadline and batcher priority (TimingHeaders)")
