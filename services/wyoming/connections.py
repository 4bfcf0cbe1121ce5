"""What bounds a Wyoming connection: how long its client may stay silent, how long one event may take to arrive,
how large it may be, and which connection gives up its slot when the listener is full.

An event is read the way the ``wyoming`` library reads it (a JSON line, then ``data_length`` bytes of JSON, then
``payload_length`` bytes), but under bounds: its first byte within ``wait_s`` (the header timeout for a connection's
first event, the idle timeout after that), all of it within ``header_timeout_s`` of that first byte, its line, data
and payload within ``max_event_bytes``. A client past a bound gets an ``error`` event and the connection closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from wyoming.error import Error
from wyoming.event import Event
from wyoming.version import __version__ as WYOMING_VERSION

WRITE_TIMEOUT_S = 1.0  # a parting error event to a client that reads nothing is given up after this


@dataclass(frozen=True)
class Bounds:
    header_timeout_s: float
    idle_timeout_s: float
    max_event_bytes: int


class Ended(Exception):
    """The client broke a bound: the connection ends with this ``error`` event."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.error = Error(text=text, code=code)


async def read_event(reader: asyncio.StreamReader, bounds: Bounds, first: bool,
                     started: Callable[[], None]) -> Event | None:
    """The client's next event (None: it closed the connection); ``started`` is called at its first byte."""
    wait_s = bounds.header_timeout_s if first else bounds.idle_timeout_s
    try:
        async with asyncio.timeout(wait_s):  # not wait_for: no task of its own, no extra turn of the loop
            head = await reader.read(1)
    except TimeoutError:
        what = "no event came" if first else "the client sent nothing"
        raise Ended(f"{what} for {wait_s:g} s: the connection is closed", "idle_timeout") from None
    if not head:
        return None
    started()
    try:
        async with asyncio.timeout(bounds.header_timeout_s):
            return await _rest_of_event(reader, head, bounds.max_event_bytes)
    except TimeoutError:
        raise Ended(f"an event did not arrive whole within {bounds.header_timeout_s:g} s", "event_timeout") from None
    except asyncio.IncompleteReadError:
        return None


async def _rest_of_event(reader: asyncio.StreamReader, head: bytes, max_bytes: int) -> Event:
    try:
        line = head + await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise Ended("an event's header line is too long", "event_too_large") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise Ended("an event's header line is not JSON", "bad_event") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise Ended("an event's header needs a 'type'", "bad_event")
    data_length, payload_length = _length(header, "data_length"), _length(header, "payload_length")
    if len(line) + data_length + payload_length > max_bytes:
        raise Ended(f"an event of {len(line) + data_length + payload_length} bytes is past the limit of "
                    f"{max_bytes}", "event_too_large")
    data: dict[str, Any] = header["data"] if isinstance(header.get("data"), dict) else {}
    if data_length:
        try:
            more = json.loads(await reader.readexactly(data_length))
        except ValueError:
            raise Ended("an event's data is not JSON", "bad_event") from None
        if not isinstance(more, dict):
            raise Ended("an event's data must be a JSON object", "bad_event")
        data.update(more)
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


def _length(header: dict, name: str) -> int:
    value = header.get(name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Ended(f"an event's '{name}' must be a whole number of bytes", "bad_event")
    return value


def event_bytes(event: Event) -> bytes:
    """The event as the protocol sends it (what ``wyoming.event.async_write_event`` writes), for a write that cannot
    wait (a connection closed to make room for another)."""
    header: dict = {"type": event.type, "version": WYOMING_VERSION}
    data = json.dumps(event.data, ensure_ascii=False).encode() if event.data else b""
    if data:
        header["data_length"] = len(data)
    if event.payload:
        header["payload_length"] = len(event.payload)
    return json.dumps(header, ensure_ascii=False).encode() + b"\n" + data + (event.payload or b"")


class Connection(Protocol):
    address: str
    quiet_since: float | None  # waiting between requests since then (monotonic); None while busy
    spoke: bool  # has sent an event

    def reclaim(self) -> None:
        """Close this quiet connection now, telling its client why."""


def quietest(connections: Iterable[Connection]) -> Connection | None:
    """The connection to close for a new one: of those waiting between requests, one that has never sent an event
    before any that has (a client that opens a connection and says nothing is never preferred to one that spoke),
    and of those the one that has waited longest; None if every one is busy."""
    quiet = [c for c in connections if c.quiet_since is not None]
    return min(quiet, key=lambda c: (c.spoke, c.quiet_since or 0.0)) if quiet else None
