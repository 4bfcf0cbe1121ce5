"""One realtime transcription session: the client's events in, OpenAI's server events out.

Audio is kept at 16 kHz (``AudioTimeline``). With server VAD on, a pump sends each new ~160 ms of it, in whole
32-ms frames, to the VAD service with the Silero state the previous frames left (``/v1/audio/vad/stream``, batched
with every other stream's frames), and ``TurnDetector`` turns the probabilities into turns. While a turn goes on,
the turn so far is re-decoded at most once a ``PARTIAL_INTERVAL_S`` (interactive priority, a short deadline, one
at a time, only while the STT model has an instance free, cancelled when superseded) and each decode's words but its
last go out as deltas, as far as they extend what went out. When the speaker has been quiet for 160 ms (a pause),
the turn is decoded at once at the ``realtime`` priority (ahead of interactive work) while the silence is timed: if
the pause ends the turn, that decode is its transcript, so ``completed`` follows the end of speech by about one
decode instead of the silence plus a decode; if speech resumes, it is cancelled. Transcripts go out in the order
of their turns. Everything a session holds is bounded: its audio (``max_turn_s`` of a turn, the prefix padding
between turns), one VAD call, one partial and one early decode at a time; closing it cancels all its work.

Metering: each committed turn is one request in the key's minute and holds its seconds against the key's audio
quota before it is transcribed (``guard.reserve_turn``), and is charged as soon as it is (``settle_turn``). A turn
the key cannot pay for (quota spent, or its rpm reached) fails with that error, and an ``error`` event says it; the
socket stays open, and while the quota stays spent no partial or early decode starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr
from prometheus_client import Histogram

from services.auth.guard import release_hold, reserve_turn, settle_turn
from services.core.audio import pcm16_to_float
from services.core.contracts.errors import HarmonyError, ServiceUnavailable
from services.core.contracts.wire import TranscriptionResult
from services.router.realtime import events
from services.router.realtime.config import SessionConfig, Transcription
from services.router.realtime.events import RealtimeError
from services.router.realtime.models import DeltaText, SessionModels, token_logprobs
from services.router.realtime.turns import RATE, AudioTimeline, TurnDetector, TurnEvent, ms

log = logging.getLogger("harmony.realtime")

FRAME = 512                 # Silero's frame at 16 kHz (32 ms)
VAD_STEP = 5 * FRAME        # audio goes to the VAD service every 160 ms while speech goes on or nobody speaks,
QUIET_STEP = FRAME          # and every frame once a turn has gone quiet (its end is heard within 32 ms)
VAD_MAX = 100 * FRAME       # at most 3.2 s in one VAD call (a session that fell behind catches up in steps)
PARTIAL_INTERVAL_S = 1.0    # partial re-decodes at most this often, and only of a turn at least this long
MIN_COMMIT_MS = 100         # as OpenAI: a commit needs at least 100 ms of audio
VAD_ERROR_EVERY_S = 5.0     # a failing VAD is reported at most this often
UNPAID = frozenset({"insufficient_quota", "quota_held", "rate_limit_exceeded"})  # a turn the key cannot pay for


@dataclass
class Turn:
    item_id: str
    start: int
    deltas: DeltaText = field(default_factory=DeltaText)
    partial: asyncio.Task | None = None
    early: asyncio.Task | None = None  # the decode started when the speaker paused
    last_partial: float = 0.0


class RealtimeSession:
    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]], models: SessionModels, *,
                 beta: bool = False, max_turn_s: float = 30.0, max_buffer_s: float = 120.0,
                 turn_time: Histogram | None = None) -> None:
        self._send = send
        self.turn_time = turn_time  # harmony_realtime_turn_seconds{model}: commit to completed, per turn
        self.models = models
        self.beta = beta
        self.id = events.new_id("sess")
        self.config = SessionConfig()
        if models.vad() is None:
            self.config.turn_detection = None  # no VAD model served: the client commits
        self.max_turn = int(max_turn_s * RATE)
        self.max_buffer = int(max_buffer_s * RATE)
        self.timeline = AudioTimeline()
        self.buffer_start = 0  # where the input buffer (audio not yet committed) begins
        self.detector = self._detector()
        self.turn: Turn | None = None
        self.vad_at = 0
        self.vad_state: str | None = None
        self.epoch = 0  # bumped by clear and by a change of turn detection: a VAD answer from before is dropped
        self.previous_item_id: str | None = None
        self.last_final: asyncio.Task | None = None
        self.transcribed_s = 0.0
        self.unpaid = False  # the key's last turn was refused (quota or rate): no partial or early decode starts
        self._resampler: Any = None
        self._resampler_rate = 0
        self._audio = asyncio.Event()
        self._vad_error_at = float("-inf")
        self._tasks: set[asyncio.Task] = set()
        self._spawn(self._vad_pump())

    # ------------------------------------------------------------------ client events

    def created(self) -> dict[str, Any]:
        if self.beta:
            return events.server_event("transcription_session.created", session=self.config.beta(self.id))
        return events.server_event("session.created", session=self.config.ga(self.id))

    async def handle(self, text: str | bytes) -> None:
        event = events.parse_client_event(text)
        kind = event["type"]
        if kind in ("session.update", "transcription_session.update"):
            await self._update(event)
        elif kind == "input_audio_buffer.append":
            self._append(event)
        elif kind == "input_audio_buffer.commit":
            await self._manual_commit(event)
        else:
            await self._clear()

    async def _update(self, event: dict[str, Any]) -> None:
        config = self.config.model_copy(deep=True)
        config.update(event)
        try:
            self.models.stt(config.transcription)
        except HarmonyError as exc:
            raise RealtimeError(exc.message, param=exc.param, code=exc.code, event_id=event.get("event_id")) from None
        if config.turn_detection is not None and self.models.vad() is None:
            raise RealtimeError("server VAD needs a vad model and none is served: set turn_detection to null and "
                                "commit the buffer yourself", param="session.turn_detection",
                                event_id=event.get("event_id"))
        vad_changed = config.turn_detection != self.config.turn_detection
        self.config = config
        if vad_changed:
            self._restart_turns()
        if event["type"] == "session.update":
            await self.send(events.server_event("session.updated", session=config.ga(self.id)))
        else:
            await self.send(events.server_event("transcription_session.updated", session=config.beta(self.id)))

    def _append(self, event: dict[str, Any]) -> None:
        pcm = events.pcm16_of(event)
        audio = self._to_16k(pcm16_to_float(pcm))
        held = self.timeline.end - self.timeline.start  # with server VAD: a turn, or a VAD that fell behind
        in_buffer = self.timeline.end - self.buffer_start  # without: what the client has not committed
        if held + len(audio) > self.max_buffer or (self.detector is None and in_buffer + len(audio) > self.max_turn):
            raise RealtimeError(f"the input audio buffer is full ({ms(self.max_turn) // 1000} s of a turn at most, "
                                "or the session fell behind): commit or clear it", param="audio",
                                code="input_audio_buffer_full", event_id=event.get("event_id"))
        self.timeline.append(audio)
        self._audio.set()

    def _to_16k(self, audio: np.ndarray) -> np.ndarray:
        rate = self.config.sample_rate
        if rate == RATE:
            return audio
        if self._resampler is None or self._resampler_rate != rate:
            self._resampler, self._resampler_rate = soxr.ResampleStream(rate, RATE, 1, dtype="float32"), rate
        return self._resampler.resample_chunk(audio)

    async def _manual_commit(self, event: dict[str, Any]) -> None:
        start = self.turn.start if self.turn is not None else max(self.buffer_start, self.timeline.start)
        end = self.timeline.end
        if ms(end - start) < MIN_COMMIT_MS:
            raise RealtimeError(f"Error committing input audio buffer: buffer too small. Expected at least "
                                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms(max(end - start, 0))}ms of "
                                "audio.", code="input_audio_buffer_commit_empty", event_id=event.get("event_id"))
        if self.detector is not None:  # turn detection goes on after the committed audio
            self.detector.reset()
            self.epoch += 1
            self.vad_at = end
        await self._commit(end)

    async def _clear(self) -> None:
        if self.turn is not None:
            self._cancel_turn_work(self.turn)
            self.turn = None
        self.timeline.drop_before(self.timeline.end)
        self.buffer_start = self.timeline.end
        self._restart_turns()
        await self.send(events.cleared())

    # ------------------------------------------------------------------ turns

    def _detector(self) -> TurnDetector | None:
        td = self.config.turn_detection
        if td is None:
            return None
        return TurnDetector(td.threshold, td.prefix_padding_ms, td.silence_duration_ms, FRAME)

    def _restart_turns(self) -> None:
        """Turn detection starts afresh from the audio now held (a clear, or new turn detection settings)."""
        if self.turn is not None:
            self._cancel_turn_work(self.turn)
            self.turn = None
        self.epoch += 1
        self.detector = self._detector()
        self.vad_at = self.timeline.end
        self.vad_state = None

    async def _vad_pump(self) -> None:
        while True:
            await self._audio.wait()
            self._audio.clear()
            while self.detector is not None and self.timeline.end - self.vad_at >= self._vad_step_size():
                try:
                    await self._vad_step()
                except HarmonyError as exc:  # e.g. the session's model left the table: said, and the stream goes on
                    await self._vad_failed(exc)

    def _vad_step_size(self) -> int:
        return QUIET_STEP if self.detector is not None and self.detector.quiet else VAD_STEP

    async def _vad_step(self) -> None:
        model = self.models.vad()
        epoch, first = self.epoch, self.vad_at
        n = min((self.timeline.end - first) // FRAME * FRAME, VAD_MAX)
        audio = self.timeline.slice(first, first + n)
        try:
            if model is None:
                raise ServiceUnavailable("no vad model is served")
            result = await self.models.vad_frames(model, audio, self.vad_state)
        except HarmonyError as exc:
            if epoch == self.epoch:
                self.vad_at = first + n  # these frames go unjudged; the stream goes on
            await self._vad_failed(exc)
            return
        detector = self.detector
        if epoch != self.epoch or detector is None:
            return
        self.vad_at, self.vad_state = first + n, result.state
        for event in detector.feed(first, result.probabilities, floor=self.buffer_start, audio=audio):
            if epoch != self.epoch:  # a clear or new settings came while an event went out
                return
            await self._on_turn_event(event)
        if epoch == self.epoch:
            await self._after_vad(detector)

    async def _vad_failed(self, exc: HarmonyError) -> None:
        """Said to the client at most once every ``VAD_ERROR_EVERY_S`` (a VAD that is down fails every step)."""
        now = time.monotonic()
        if now - self._vad_error_at >= VAD_ERROR_EVERY_S:
            self._vad_error_at = now
            await self.send(events.error_event(exc))

    async def _on_turn_event(self, event: TurnEvent) -> None:
        if event.kind == "start":
            self.turn = Turn(events.new_id("item"), event.at, last_partial=time.monotonic())
            await self.send(events.speech_started(self.turn.item_id, ms(event.at)))
        elif self.turn is None:
            return
        elif event.kind == "pause":
            self._cancel(self.turn.partial)
            if self.unpaid:  # the turn would be refused: nothing is decoded ahead of its commit
                return
            audio = self.timeline.slice(self.turn.start, self.vad_at)
            self.turn.early = self._spawn(self._decode(audio, final=True), watch=False)
        elif event.kind == "resume":
            self._cancel(self.turn.early)
            self.turn.early = None
        else:
            await self.send(events.speech_stopped(self.turn.item_id, ms(event.at)))
            await self._commit(event.at, quiet_since_pause=True)

    async def _after_vad(self, detector: TurnDetector) -> None:
        turn = self.turn
        if turn is None:  # between turns only the prefix padding is kept
            self.timeline.drop_before(self.vad_at - detector.prefix)
            return
        if self.vad_at - turn.start >= self.max_turn:  # a turn too long for the model: it ends here
            await self.send(events.speech_stopped(turn.item_id, ms(self.vad_at)))
            detector.reset()
            await self._commit(self.vad_at)
            return
        now = time.monotonic()
        if (not self.unpaid and turn.early is None and (turn.partial is None or turn.partial.done())
                and now - turn.last_partial >= PARTIAL_INTERVAL_S
                and self.timeline.end - turn.start >= PARTIAL_INTERVAL_S * RATE
                and self.models.has_room(self.models.stt(self.config.transcription))):
            turn.last_partial = now
            turn.partial = self._spawn(self._partial(turn, self.timeline.slice(turn.start, self.timeline.end)))

    async def _partial(self, turn: Turn, audio: np.ndarray) -> None:
        try:
            result = await self._decode(audio, final=False)
        except HarmonyError as exc:  # late or refused (the machine is busy): the next one, or the final, will do
            log.debug("partial decode of %s dropped: %s", turn.item_id, exc.message)
            return
        if self.turn is turn and turn.early is None:
            sent = len(turn.deltas.sent)
            text = turn.deltas.next(result.text.strip())
            if text:
                logprobs = token_logprobs(result, sent, len(turn.deltas.sent)) if self.config.logprobs else None
                await self.send(events.delta(turn.item_id, text, logprobs))

    async def _decode(self, audio: np.ndarray, final: bool) -> TranscriptionResult:
        settings = self.config.transcription
        model = self.models.stt(settings)
        return await self.models.transcribe(model, settings, audio, final=final, logprobs=self.config.logprobs)

    async def _commit(self, end: int, quiet_since_pause: bool = False) -> None:
        """The input buffer up to ``end`` becomes an item: ``committed``, then its transcript when decoded. The
        early decode is the transcript only when the VAD heard nothing but quiet since it began (``stop``)."""
        turn = self.turn
        item_id = turn.item_id if turn is not None else events.new_id("item")
        start = turn.start if turn is not None else max(self.buffer_start, self.timeline.start)
        audio = self.timeline.slice(start, end)
        early = None
        if turn is not None:
            self._cancel(turn.partial)
            early = turn.early if quiet_since_pause else None
            if early is None:
                self._cancel(turn.early)
        self.turn = None
        self.buffer_start = end
        if self.detector is None:
            self.timeline.drop_before(end)
        ended = time.monotonic()  # the end of the turn (its speech ended silence_duration_ms before a VAD commit)
        await self.send(events.committed(item_id, self.previous_item_id))
        self.previous_item_id = item_id
        settings = self.config.transcription
        deltas = turn.deltas if turn is not None else DeltaText()
        self.last_final = self._spawn(self._final(item_id, audio, settings, early, deltas, self.last_final, ended))

    async def _final(self, item_id: str, audio: np.ndarray, settings: Transcription, early: asyncio.Task | None,
                     deltas: DeltaText, before: asyncio.Task | None, ended: float) -> None:
        """The turn's transcript: the text its partial deltas did not yet carry as one last delta (the whole text
        when none went out, as OpenAI's whisper-1 sends it), then ``completed``. The turn is paid for first (its
        seconds held against the key's quota, one request in its minute) and charged when transcribed."""
        seconds = len(audio) / RATE
        rest, rest_logprobs, logprobs = None, None, self.config.logprobs
        refused: HarmonyError | None = None
        served = ""  # the model that transcribed the turn
        try:
            hold = await self._pay(seconds, early)
            try:
                result = await _early_result(early)
                if result is None:
                    result = await self.models.transcribe(self.models.stt(settings), settings, audio, final=True,
                                                          logprobs=logprobs)
            except BaseException:
                await asyncio.shield(release_hold(hold))
                raise
            await settle_turn(hold, seconds)
            text = result.text.strip()
            sent = len(deltas.sent)
            rest = deltas.rest(text)
            rest_logprobs = token_logprobs(result, sent, len(deltas.sent)) if logprobs else None
            event = events.completed(item_id, text, seconds, token_logprobs(result) if logprobs else None)
            served = result.model
            self.transcribed_s += seconds
        except HarmonyError as exc:
            event = events.failed(item_id, exc)
            refused = exc if exc.code in UNPAID else None
        if before is not None:
            await asyncio.wait([before])  # transcripts go out in the order of their turns
        if rest:
            await self.send(events.delta(item_id, rest, rest_logprobs))
        if self.turn_time is not None and served:  # a completed transcript: end of turn to its event
            self.turn_time.labels(served).observe(time.monotonic() - ended)
        await self.send(event)
        if refused is not None:
            await self.send(events.error_event(refused))

    async def _pay(self, seconds: float, early: asyncio.Task | None):
        """The turn's hold (None when nothing is metered); a refusal cancels its early decode and stops the
        session's decodes ahead of commits until a turn is paid for again."""
        try:
            hold = await reserve_turn(seconds)
        except HarmonyError as exc:
            if exc.code in UNPAID:
                self.unpaid = True
                self._cancel(early)
            raise
        self.unpaid = False
        return hold

    # ------------------------------------------------------------------ plumbing

    async def send(self, event: dict[str, Any]) -> None:
        await self._send(event)

    def _spawn(self, coro, watch: bool = True) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure if watch else _retrieve)
        return task

    @staticmethod
    def _cancel(task: asyncio.Task | None) -> None:
        if task is not None and not task.done():
            task.cancel()

    def _cancel_turn_work(self, turn: Turn) -> None:
        self._cancel(turn.partial)
        self._cancel(turn.early)

    async def close(self) -> None:
        """The client left or the session ended: every VAD call and decode of the session is cancelled."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieve(task: asyncio.Task) -> None:
    """A task whose outcome another task awaits, or nobody needs any more (an early decode superseded)."""
    if not task.cancelled():
        task.exception()


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("realtime session task failed: %s", exc, exc_info=exc)


async def _early_result(early: asyncio.Task | None) -> TranscriptionResult | None:
    """The decode started at the pause, if there was one and it worked (else the turn is decoded now)."""
    if early is None:
        return None
    try:
        return await early
    except HarmonyError as exc:
        log.debug("early decode failed (%s): decoding the turn again", exc.message)
        return None


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False)
