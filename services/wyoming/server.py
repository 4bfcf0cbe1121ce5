"""The Wyoming listener of ``harmony serve --wyoming-port``: one handler per connection, events in, events out.

Each connection serves any number of requests in turn (describe, transcribe, synthesize, streamed synthesize). A
request that cannot be served is answered with an ``error`` event and the connection goes on. A connection ends
when its client leaves, or breaks a bound (``connections.py``: silent too long, an event too slow or too large:
an ``error`` event, then the close), or waits between requests while the listener is full and a new client needs
its slot.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, Eventable, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler, AsyncServer, HandlerFactory
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from services.core.contracts.specs import HarmonyConfig, WyomingSettings
from services.wyoming.connections import WRITE_TIMEOUT_S, Bounds, Ended, event_bytes, quietest, read_event
from services.wyoming.early import EarlyDecode, Events, collect
from services.wyoming.errors import WyomingError
from services.wyoming.info import build_info
from services.wyoming.router_api import ModelEntry, RouterApi, TranscriptDelta, TranscriptDone, VoiceEntry
from services.wyoming.stt import AudioBuffer, Send, base_language, choose_stt_model, relay
from services.wyoming.tts import StreamedSynthesis, choose_voice, synthesize

log = logging.getLogger("harmony.wyoming")
CATALOG_TTL_S = 5.0
DEFAULT_MAX_AUDIO_S = 300.0


@dataclass
class Adapter:
    """What every connection shares: the router client, the settings, each model's audio bound, and the
    router's models and voices (asked again after a few seconds)."""

    api: RouterApi
    settings: WyomingSettings
    max_audio_s: dict[str, float] = field(default_factory=dict)  # by model name and alias
    _catalog: tuple[float, list[ModelEntry], list[VoiceEntry]] | None = None

    async def models(self) -> list[ModelEntry]:
        return (await self._fetch())[1]

    async def voices(self) -> list[VoiceEntry]:
        return (await self._fetch())[2]

    async def _fetch(self) -> tuple[float, list[ModelEntry], list[VoiceEntry]]:
        if self._catalog is None or time.monotonic() - self._catalog[0] > CATALOG_TTL_S:
            models, voices = await asyncio.gather(self.api.models(), self.api.voices())
            catalog = (time.monotonic(), models, voices)
            if models and voices:  # an engine still loading its models is asked again next time
                self._catalog = catalog
            return catalog
        return self._catalog

    def audio_bound_s(self, model: ModelEntry) -> float:
        return min(self.settings.max_audio_seconds, self.max_audio_s.get(model.id, DEFAULT_MAX_AUDIO_S))


@dataclass
class _Transcription:
    model: ModelEntry | None = None      # None: rejected, its audio is dropped until audio-stop
    language: str | None = None
    buffer: AudioBuffer | None = None
    early: EarlyDecode | None = None

    def start(self, audio: AudioStart, adapter: Adapter) -> None:
        assert self.model is not None
        buffer = self.buffer = AudioBuffer(audio, adapter.audio_bound_s(self.model))
        model, language = self.model.id, base_language(self.language)

        async def decode(nbytes: int) -> Events:
            return await collect(adapter.api.transcribe(buffer.wav(nbytes), model, language))

        self.early = EarlyDecode(buffer.rate, adapter.settings.early_decode_ms, decode)

    async def answer(self, adapter: Adapter, send: Send) -> None:
        """At audio-stop: the early decode's answer if it covers all the sound, else a decode of all the audio."""
        assert self.model is not None and self.buffer is not None and self.early is not None
        events = await self.early.result(self.buffer.pcm)
        source = _replay(events) if events is not None else \
            adapter.api.transcribe(self.buffer.wav(), self.model.id, base_language(self.language))
        await relay(source, self.language, send, adapter.settings.stream_transcripts)

    def cancel(self) -> None:
        if self.early is not None:
            self.early.cancel()


async def _replay(events: Events) -> AsyncIterator[TranscriptDelta | TranscriptDone]:
    for event in events:
        yield event


class WyomingHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, adapter: Adapter) -> None:
        super().__init__(reader, writer)
        self.adapter = adapter
        self.write_lock = asyncio.Lock()
        self.asr: _Transcription | None = None
        self.streamed: StreamedSynthesis | None = None
        self.address = peer_address(writer)
        self.quiet_since: float | None = time.monotonic()  # waiting for a request since then; None while busy
        self.spoke = False  # has sent an event
        self.reclaimed = False  # closed to make room (perhaps before its handler ran)
        settings = adapter.settings
        self.bounds = Bounds(settings.header_timeout_s, settings.idle_timeout_s, settings.max_event_bytes)

    async def run(self) -> None:
        """Events in turn, each read under the connection's bounds, until the client leaves or breaks one."""
        self._is_running = not self.reclaimed
        first = True
        try:
            while self._is_running:
                between_requests = self.asr is None and self.streamed is None
                self.quiet_since = time.monotonic() if between_requests else None
                try:
                    event = await read_event(self.reader, self.bounds, first, self._busy)
                except Ended as ended:
                    log.debug("wyoming: %s: %s", self.address, ended.error.text)
                    await self._part(ended.error)
                    break
                if event is None or not await self.handle_event(event):
                    break
                first = False
        finally:
            self.quiet_since = None
            await self.disconnect()
            self.writer.close()

    def _busy(self) -> None:
        self.quiet_since = None
        self.spoke = True

    async def _part(self, error: Error) -> None:
        try:
            await asyncio.wait_for(self.send(error), WRITE_TIMEOUT_S)
        except (ConnectionError, TimeoutError):
            pass

    def reclaim(self) -> None:
        """Closed while waiting between requests, so that a new connection gets its slot."""
        self.quiet_since = None
        self._is_running = False
        self.reclaimed = True
        error = Error(text="the connection waited too long between requests while the server was full; connect "
                           "again", code="connection_reclaimed")
        try:
            self.writer.write(event_bytes(error.event()))
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()  # the pending read sees the end of the stream, and the handler ends

    async def send(self, message: Eventable) -> None:
        async with self.write_lock:
            await self.write_event(message.event())

    async def send_error(self, error: WyomingError) -> None:
        await self.send(Error(text=error.text, code=error.code))

    async def handle_event(self, event: Event) -> bool:
        """Answer one event; False (the connection ends) only when the client is gone."""
        try:
            await self._answer(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        return True

    async def _answer(self, event: Event) -> None:
        try:
            await self._handle(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            raise
        except WyomingError as exc:
            await self.send_error(exc)
        except (KeyError, TypeError, ValueError) as exc:  # an event without the fields its type needs
            log.debug("bad %s event: %r", event.type, exc)
            await self.send(Error(text=f"bad '{event.type}' event: {exc!r}", code="bad_event"))
        except Exception:  # noqa: BLE001 - one request fails, the connection and the server go on
            log.exception("wyoming: %s failed", event.type)
            await self.send(Error(text=f"'{event.type}' failed inside the engine", code="internal_error"))

    async def disconnect(self) -> None:
        if self.streamed is not None:
            self.streamed.cancel()
        if self.asr is not None:
            self.asr.cancel()

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            info = build_info(await self.adapter.models(), await self.adapter.voices(),
                              self.adapter.settings.stream_transcripts)
            await self.send(info)
        elif Ping.is_type(event.type):
            await self.send(Pong(text=Ping.from_event(event).text))
        elif Transcribe.is_type(event.type):
            await self._transcribe(Transcribe.from_event(event))
        elif AudioStart.is_type(event.type):
            await self._audio_start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            self._audio_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._audio_stop()
        elif Synthesize.is_type(event.type):
            if self.streamed is None:  # inside a streamed synthesis it is the copy sent for older servers
                request = Synthesize.from_event(event)
                voice, language = choose_voice(await self.adapter.voices(), request.voice,
                                               self.adapter.settings.voice)
                await synthesize(self.adapter.api, request.text, voice, language, self.send)
        elif SynthesizeStart.is_type(event.type):
            await self._synthesize_start(SynthesizeStart.from_event(event))
        elif SynthesizeChunk.is_type(event.type):
            if self.streamed is None:
                raise WyomingError("synthesize-chunk before synthesize-start", "no_synthesize_start")
            self.streamed.add(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self._synthesize_stop()
        # other events (wake, intent, satellite...) are not ours: dropped, as the protocol asks

    async def _transcribe(self, request: Transcribe) -> None:
        if self.asr is not None:
            self.asr.cancel()
        self.asr = _Transcription(language=request.language)
        self.asr.model = choose_stt_model(await self.adapter.models(), request.name, request.language,
                                          self.adapter.settings.stt_model)

    async def _audio_start(self, start: AudioStart) -> None:
        if self.asr is None:  # audio without a transcribe: the default model, the language detected
            self.asr = _Transcription()
            self.asr.model = choose_stt_model(await self.adapter.models(), None, None,
                                              self.adapter.settings.stt_model)
        if self.asr.model is None:
            return
        self.asr.cancel()
        try:
            self.asr.start(start, self.adapter)
        except WyomingError:
            self.asr.model = None
            raise

    def _audio_chunk(self, chunk: AudioChunk) -> None:
        if self.asr is None or (self.asr.model is not None and self.asr.buffer is None):
            raise WyomingError("audio-chunk before audio-start", "no_audio_start")
        if self.asr.model is None:
            return
        assert self.asr.buffer is not None and self.asr.early is not None
        try:
            self.asr.buffer.add(chunk)
        except WyomingError:
            self.asr.model = None  # refused once; the rest of this audio is dropped
            self.asr.cancel()
            raise
        self.asr.early.after_audio(self.asr.buffer.pcm)

    async def _audio_stop(self) -> None:
        asr, self.asr = self.asr, None
        if asr is None or (asr.model is not None and asr.buffer is None):
            raise WyomingError("audio-stop before audio-start", "no_audio_start")
        if asr.model is None or asr.buffer is None:
            return  # refused earlier: its error was the answer
        if not asr.buffer.pcm:  # nothing was said: no words, in the same events as any transcript
            await relay(_replay([TranscriptDone("")]), asr.language, self.send,
                        self.adapter.settings.stream_transcripts)
            return
        await asr.answer(self.adapter, self.send)

    async def _synthesize_start(self, start: SynthesizeStart) -> None:
        if self.streamed is not None:
            self.streamed.cancel()
            self.streamed = None
        voice, language = choose_voice(await self.adapter.voices(), start.voice, self.adapter.settings.voice)
        self.streamed = StreamedSynthesis(self.adapter.api, voice, language, self.send, self.send_error)

    async def _synthesize_stop(self) -> None:
        streamed, self.streamed = self.streamed, None
        if streamed is None:
            raise WyomingError("synthesize-stop before synthesize-start", "no_synthesize_start")
        await streamed.finish()
        await self.send(SynthesizeStopped())


class SocketServer(AsyncServer):
    """A Wyoming server on a socket made by the engine (bound at start, so a taken port fails there), holding at
    most ``max_connections`` connections, ``per_address`` of them from one client address. A connection past
    either limit takes the slot of the one (in that pool) that has waited longest between requests; when every one
    is busy, it gets an error event and is closed. ``backlog``: the kernel's accept queue (asyncio's 100 would
    drop the handshakes of a burst, whose connections then arrive seconds late)."""

    def __init__(self, sock: socket.socket, max_connections: int, per_address: int | None = None,
                 backlog: int = 2048) -> None:
        super().__init__()
        self.sock = sock
        self.max_connections = max_connections
        self.per_address = per_address or max_connections
        self.backlog = backlog
        self._server: asyncio.AbstractServer | None = None

    async def run(self, handler_factory: HandlerFactory) -> None:
        await self.start(handler_factory)
        assert self._server is not None
        await self._server.serve_forever()

    async def start(self, handler_factory: HandlerFactory) -> None:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            refusal = self._make_room(peer_address(writer))
            if refusal is not None:
                await _refuse(writer, refusal)
                return
            await self._handler_callback(handler_factory, reader, writer)

        self._server = await asyncio.start_server(on_connection, sock=self.sock, backlog=self.backlog)

    def _make_room(self, address: str) -> str | None:
        """Room for a connection from ``address`` (None), made by closing a quiet one if need be; else why not."""
        everyone = list(self._handlers.items())
        same = [(task, handler) for task, handler in everyone if getattr(handler, "address", None) == address]
        if len(same) >= self.per_address and not self._reclaim(same):
            return f"too many Wyoming connections from {address} (at most {self.per_address}); try again shortly"
        if len(same) < self.per_address and len(everyone) >= self.max_connections and not self._reclaim(everyone):
            return f"too many Wyoming connections (at most {self.max_connections}); try again shortly"
        return None

    def _reclaim(self, pool: list[tuple[asyncio.Task, AsyncEventHandler]]) -> bool:
        victim = quietest(handler for _, handler in pool if isinstance(handler, WyomingHandler))
        if victim is None:
            return False
        self._handlers.pop(next(task for task, handler in pool if handler is victim), None)
        log.debug("wyoming: closing a quiet connection of %s to make room", victim.address)
        victim.reclaim()
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await super().stop()


async def _refuse(writer: asyncio.StreamWriter, text: str) -> None:
    try:
        await asyncio.wait_for(async_write_event(Error(text=text, code="too_many_connections").event(), writer),
                               WRITE_TIMEOUT_S)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


def peer_address(writer: asyncio.StreamWriter) -> str:
    """The client's address without its port (IPv4-mapped IPv6 as IPv4); empty for a Unix socket."""
    peer = writer.get_extra_info("peername")
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host


class WyomingService:
    """The listener and its adapter, started and stopped by ``harmony serve``."""

    def __init__(self, adapter: Adapter, sock: socket.socket, backlog: int = 2048) -> None:
        self.adapter = adapter
        settings = adapter.settings
        self.server = SocketServer(sock, settings.max_connections, settings.max_connections_per_address, backlog)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.sock.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        await self.server.start(lambda reader, writer: WyomingHandler(reader, writer, self.adapter))

    async def stop(self) -> None:
        await self.server.stop()
        await self.adapter.api.aclose()


def router_connect_url(router_sock: socket.socket) -> str:
    """How the adapter reaches the router it runs beside: its Unix socket, or loopback for a wildcard address."""
    if router_sock.family == socket.AF_UNIX:
        return "unix:" + router_sock.getsockname()
    host, port = router_sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def open_wyoming(config: HarmonyConfig, router_sock: socket.socket) -> WyomingService:
    """The Wyoming listener of ``config.wyoming`` (bound now: a taken port fails at start), not yet serving."""
    from services.core.http.server import tcp_socket

    settings = config.wyoming
    assert settings.port is not None
    bounds = {name: model.limits.audio_seconds(model.task)
              for model in config.models for name in [model.name, *model.aliases]}
    sock = tcp_socket(settings.host or config.server.host, settings.port)
    adapter = Adapter(RouterApi.connect(router_connect_url(router_sock), settings.api_key, settings.request_timeout_s),
                      settings, bounds)
    return WyomingService(adapter, sock, config.server.backlog)
