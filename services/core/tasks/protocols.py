"""One protocol per task: what a backend of that task offers its service, and nothing more.

A service holds its models as ``LoadedModel[<protocol>]`` and calls only what the
protocol names, so any class that implements it (a built-in one, or a plugin's
registered under the ``harmony.backends`` entry points) serves without a change to
the service. Every method but ``load`` runs in a worker thread, on a batch; a backend
knows its model and nothing of HTTP. ``verify`` checks a loaded backend against its
task's protocol, so a plugin that misses a member fails at load with the member's name.

A ``run_batch`` that takes a ``wanted`` keyword (services/core/tasks/wanted.py) is told which of its items are still
awaited, and may drop the others between its steps, answering them ``Abandoned``; one without it is called as
before (an STT backend's is typed with it, since Whisper's batches run in steps).

Optional capabilities are sub-protocols (``StreamingVadBackend``, ``EmbeddingSized``): ``Capabilities.of`` finds
them once when a backend loads, and a service reads them typed from its ``LoadedModel.capabilities``.

Attributes such as ``sample_rate`` may be set by ``load()``. The items a batch carries are in
services/core/tasks/jobs.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import SttTask, VoiceInfo
from services.core.tasks.jobs import ChunkJob, ChunkResult, ConversionJob, SynthJob, WindowEmbeddings, WindowsJob
from services.core.tasks.wanted import Abandoned, Wanted, all_wanted


@runtime_checkable
class Backend(Protocol):
    """What every backend offers: built from its spec, loaded once, then batches (blocking)."""

    task: ClassVar[Task | str]
    # Read by ``load``: for a hf, url or oci source the service sets it, before ``load``, to the same spec with
    # ``source.path`` at the weights in the model cache (services/weights/fetch.py ``local_spec``).
    spec: NamedModel

    def __init__(self, spec: NamedModel) -> None: ...

    def load(self) -> None: ...

    def run_batch(self, items: Any) -> list[Any]:
        """One batch from the dynamic batcher (blocking, in a worker thread); the task's protocol types it."""


@runtime_checkable
class SttBackend(Backend, Protocol):
    """Speech-to-text: 30-second windows of 16-kHz audio -> segments with timestamps."""

    @property
    def languages(self) -> list[str]: ...

    def check_request(self, task: SttTask, language: str | None) -> None:
        """Raise InvalidRequest (400) for a task or language this model cannot do, before any audio is decoded."""

    def run_batch(self, jobs: Sequence[ChunkJob], wanted: Wanted = all_wanted) -> list[ChunkResult | Abandoned]:
        """``wanted(i)``: whether job ``i`` is still awaited; a job that is not may be answered ``Abandoned``."""


@runtime_checkable
class TtsBackend(Backend, Protocol):
    """Text-to-speech: one sentence per job -> mono float32 audio at ``sample_rate``."""

    sample_rate: int

    def voices(self) -> list[VoiceInfo]: ...

    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]: ...


@runtime_checkable
class VadBackend(Backend, Protocol):
    """Voice activity: mono float32 audio at ``sample_rate`` -> speech probability per frame of ``frame_samples``."""

    sample_rate: int
    frame_samples: int

    def run_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@runtime_checkable
class StreamingVadBackend(VadBackend, Protocol):
    """A VAD backend that also goes on from a live stream's state (optional): it declares ``streams = True``, and
    its batches may then hold ``VadContinuation`` items beside whole utterances, each answered with a
    ``VadContinued`` whose state is ``stream_state_size`` float32 values (what the VAD service checks a client's
    state against)."""

    streams: bool
    stream_state_size: int


@runtime_checkable
class SpeakerEncoder(Backend, Protocol):
    """Speaker embedding: speech at ``sample_rate`` -> one unit-length embedding per item."""

    sample_rate: int

    def run_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]: ...


@runtime_checkable
class EmbeddingSized(SpeakerEncoder, Protocol):
    """A speaker encoder that names the length of its embeddings (optional): the voice service then refuses a
    voice registered with an embedding of another length."""

    embedding_size: int


@runtime_checkable
class WindowedEncoder(SpeakerEncoder, Protocol):
    """A speaker encoder that also embeds sliding windows (optional; diarization): a batch may then hold
    ``WindowsJob`` items beside plain arrays, each answered a ``WindowEmbeddings``."""

    window_seconds: float

    def run_batch(self, items: Sequence[np.ndarray | WindowsJob]  # type: ignore[override]
                  ) -> list[np.ndarray | WindowEmbeddings]: ...


@runtime_checkable
class VoiceConverter(Backend, Protocol):
    """Voice conversion: speech toward a target speaker, described by the converter's own statistics."""

    def analyze(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Speaker statistics of reference speech, as JSON-able data (what ``ConversionJob.target`` takes)."""

    def run_batch(self, jobs: Sequence[ConversionJob]) -> list[np.ndarray]: ...


PROTOCOLS: dict[Task, type] = {
    Task.stt: SttBackend,
    Task.tts: TtsBackend,
    Task.vad: VadBackend,
    Task.embed: SpeakerEncoder,
    Task.vc: VoiceConverter,
}


class BackendContractError(TypeError):
    """A loaded backend that does not implement its task's protocol, or an optional capability it declares."""


def verify(backend: Any, task: Task) -> None:
    """Raise BackendContractError naming the members ``backend`` lacks for ``task``'s protocol."""
    _require(backend, PROTOCOLS[task])


def _require(backend: Any, protocol: type) -> None:
    if isinstance(backend, protocol):
        return
    members = [m for m in _members(protocol) if not hasattr(backend, m)]
    raise BackendContractError(f"{type(backend).__name__} does not implement {protocol.__name__}: "
                               f"missing {', '.join(members) or '?'}")


def _size(backend: Any, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BackendContractError(f"{type(backend).__name__}.{name} must be a positive integer, not {value!r}")
    return value


@dataclass(frozen=True)
class Capabilities:
    """What a loaded backend offers beyond its task's protocol, found once when it loads (``of``), typed: a service
    asks ``streaming`` or ``embedding_size`` instead of probing the backend's attributes."""

    streaming: StreamingVadBackend | None = None   # a VAD backend that continues live streams
    embedding_size: int | None = None              # the length of a speaker encoder's embeddings, when it names it
    windows: WindowedEncoder | None = None         # a speaker encoder that embeds sliding windows (diarization)

    @classmethod
    def of(cls, backend: Any, task: Task) -> Capabilities:
        """``backend``'s task protocol checked (``verify``), then its optional capabilities: one it declares but
        does not fully implement (``streams = True`` without ``stream_state_size``) is a BackendContractError."""
        verify(backend, task)
        streaming: StreamingVadBackend | None = None
        if task == Task.vad and getattr(backend, "streams", False) is True:
            _require(backend, StreamingVadBackend)
            _size(backend, "stream_state_size", backend.stream_state_size)
            streaming = backend
        size = None
        if task == Task.embed and isinstance(backend, EmbeddingSized):
            size = _size(backend, "embedding_size", backend.embedding_size)
        windows = backend if task == Task.embed and isinstance(backend, WindowedEncoder) else None
        return cls(streaming=streaming, embedding_size=size, windows=windows)


def _members(protocol: type) -> list[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if getattr(klass, "_is_protocol", False) and klass is not Protocol:
            names |= {n for n in vars(klass) if not n.startswith("_")} | set(getattr(klass, "__annotations__", {}))
    return sorted(names)
