"""Every contract that crosses a process, defined once; both sides import it from here.

- router <-> model services: the requests the router sends (JSON bodies, multipart
  fields) and the answers it reads back;
- operator -> router: the model table the operator writes into the router's ConfigMap;
- operator -> Kubernetes API: the status of SpeechModel and SpeechRoute resources
  (the CRDs' status schemas are generated from these classes).

Multipart forms carry scalars as strings: ``FormFields.form()`` renders a request for
httpx, ``FormFields.from_form()`` parses and validates it on the service, and a bad
field is a 400 that names it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from services.core.contracts.errors import InvalidRequest, invalid_request
from services.core.contracts.formats import AudioFormat
from services.core.contracts.forms import Form, single
from services.core.contracts.specs import ModelName, NamedModel, NamedRoute, SpeechModelSpec, SpeechRouteSpec

# ---------------------------------------------------------------------------- numbers in JSON bodies

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""A float that is a number: NaN and infinities refused (JSON has neither, Python's parser takes both)."""
JsonFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A JSON number field: an int or a float, finite; never a boolean (``true`` is not 1.0) nor a string."""
JsonInt = Annotated[int, Field(strict=True)]
"""A JSON integer field: never a boolean, a float nor a string."""

MAX_EMBEDDING_SIZE = 8192
EMBEDDING: TypeAdapter[list[float]] = TypeAdapter(list[JsonFloat])


def parse_embedding(raw: str, param: str = "embedding") -> list[float]:
    """A speaker embedding sent as a JSON list of finite numbers (1 to ``MAX_EMBEDDING_SIZE`` of them); else a 400."""
    try:
        values = EMBEDDING.validate_json(raw)
    except ValidationError:
        raise InvalidRequest(f"'{param}' must be a JSON list of finite numbers", param=param) from None
    if not 0 < len(values) <= MAX_EMBEDDING_SIZE:
        raise InvalidRequest(f"'{param}' must hold 1 to {MAX_EMBEDDING_SIZE} numbers, not {len(values)}", param=param)
    return values


def parse_spans(raw: str | None, param: str = "segments") -> list[tuple[float, float]] | None:
    """``[{"start": s, "end": e}, ...]`` (seconds of the file) from a form field; None when absent; a 400 naming
    ``param`` when it is not such a list or a range is empty, negative or infinite."""
    if raw is None or raw == "":
        return None
    try:
        data: Any = json.loads(raw)
        spans = [(float(s["start"]), float(s["end"])) for s in data]
    except (ValueError, TypeError, KeyError):
        raise InvalidRequest(f"'{param}' must be a JSON list of {{\"start\": seconds, \"end\": seconds}}",
                             param=param) from None
    for start, end in spans:
        if not (0 <= start < end and math.isfinite(end)):
            raise InvalidRequest(f"{param[:-1]} [{start}, {end}] is not a valid time range", param=param)
    return spans


# ---------------------------------------------------------------------------- multipart helper


class FormFields(BaseModel):
    """Base of every multipart contract: scalar fields only, rendered as strings."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    def form(self) -> dict[str, str]:
        """The fields as multipart strings (None left out), for httpx's ``data=``."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(mode="json", exclude_none=True).items():
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return out

    @classmethod
    def from_form(cls, form: Form) -> Self:
        """Parse the plain (non-file) fields of ``form`` (any multi-dict or mapping); an invalid one is a 400 naming
        it, and so is a file sent where a plain field belongs."""
        data = {}
        for name in cls.model_fields:
            value = single(form, name)
            if value is None or (isinstance(value, str) and value.strip() == ""):
                continue
            if not isinstance(value, str):
                raise InvalidRequest(f"'{name}' must be a plain field, not a file", param=name)
            data[name] = value.strip()
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_request(exc.errors(), data) from None


# ---------------------------------------------------------------------------- speech-to-text

SttTask = Literal["transcribe", "translate"]


class TranscriptionParams(FormFields):
    """Router -> STT service: the fields beside ``file`` on ``POST /v1/audio/transcriptions``."""

    model: str | None = None
    task: SttTask = "transcribe"
    language: str | None = Field(None, max_length=16)
    prompt: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    word_timestamps: bool = False
    vad_filter: bool = False
    fit_context: bool = False  # short windows encoded over their own length (realtime turns; faster-whisper)
    stream: bool = False
    logprobs: bool = False  # each segment's text tokens with their log-probabilities (include=logprobs)
    languages: str | None = Field(None, max_length=512, description="comma-separated: detection picks among these")
    spans: str | None = Field(None, description="JSON list of {start, end} (seconds): only these parts of the file "
                              "are decoded, each on its own (its own language unless ``language``; a span over "
                              "30 s in windows); each segment says its span. Touching spans meet at the quietest "
                              "moment near their boundary (diarization's speaker turns)")
    max_audio_seconds: float | None = Field(None, gt=0, description="decode at most this (the router's quota hold); "
                                            "past it 400 audio_too_long, and the router holds more and sends again")

    @field_validator("language")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else None


class TokenLogprob(BaseModel):
    """A decoded text token: its text, the decoder's log-probability of it, its UTF-8 bytes (OpenAI's ``logprobs``
    items; a token may hold part of a character, so ``token`` can show a replacement character where ``bytes``
    is exact)."""

    token: str
    logprob: float
    bytes: list[int]


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float = 0.0


class Segment(BaseModel):
    id: int = 0
    seek: int = 0
    start: float
    end: float
    text: str
    tokens: list[int] = []
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None
    logprobs: list[TokenLogprob] | None = None  # its text tokens, in order (TranscriptionParams.logprobs)
    span: int | None = None  # the index of the span it was decoded from (TranscriptionParams.spans)


class TranscriptionResult(BaseModel):
    """STT service -> router: the whole result; the router renders it in the requested response_format."""

    model: str
    task: SttTask
    language: str
    language_probability: float
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None


class SegmentEvent(BaseModel):
    """STT stream (NDJSON): one decoded segment, as soon as its window is done."""

    type: Literal["segment"] = "segment"
    segment: Segment
    language: str


class DoneEvent(BaseModel):
    """STT stream: the last line of a stream that succeeded."""

    type: Literal["done"] = "done"
    result: TranscriptionResult


class ErrorEvent(BaseModel):
    """STT stream: the last line of a stream that failed after it started."""

    type: Literal["error"] = "error"
    status: int
    error: dict[str, Any]


SttEvent = SegmentEvent | DoneEvent | ErrorEvent
STT_EVENT: TypeAdapter[SttEvent] = TypeAdapter(SttEvent)
"""One line of the STT service's NDJSON stream, parsed."""


# ---------------------------------------------------------------------------- text-to-speech

_UNSPEAKABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def speakable(text: str) -> str:
    """``text`` with control characters (NUL, escape, C1 controls) made spaces: no synthesizer can speak them,
    and some (Piper's phonemizer) fail on a NUL. Tabs and line breaks stay."""
    return _UNSPEAKABLE.sub(" ", text)


def has_words(text: str) -> bool:
    """Whether ``text`` holds anything to speak: a letter, a digit or a symbol ($, %, +, an emoji). Punctuation,
    spaces, marks, control and format characters alone (``...!!!???``) are silence: no synthesizer says them."""
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


class SynthesisRequest(BaseModel):
    """Router -> TTS service (``POST /v1/audio/speech``, JSON): a concrete model and the backend's own voice id."""

    model_config = ConfigDict(allow_inf_nan=False)

    model: str
    input: str = Field(..., min_length=1, max_length=4096)
    voice: str
    language: str = "en"
    speed: JsonFloat = Field(1.0, ge=0.25, le=4.0)
    response_format: AudioFormat = "mp3"
    sample_rate: JsonInt | None = Field(None, ge=8000, le=48000)

    @field_validator("input")
    @classmethod
    def _speakable(cls, value: str) -> str:
        value = speakable(value)
        if not has_words(value):
            raise ValueError("input has nothing to speak: no letters, digits or symbols, only punctuation or spaces")
        return value


class VoiceInfo(BaseModel):
    """TTS service -> router: a voice as the API lists it."""

    id: str                    # public voice id, unique across the engine
    name: str
    model: str                 # the SpeechModel that speaks it
    backend: str
    languages: list[str]
    sample_rate: int
    backend_voice: str         # the id the backend itself uses
    neural: bool = True


class VoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoiceInfo]


# ---------------------------------------------------------------------------- voice activity detection


class VadOptions(BaseModel):
    """Silero's options, with their bounds: the VAD service's (``VadParams``) and the public ``/v1/audio/vad``'s."""

    threshold: float = Field(0.5, ge=0.0, le=1.0, description="speech probability above which a frame is speech")
    min_speech_duration_ms: float = Field(250, ge=0.0, le=3_600_000.0, description="shorter speech is dropped")
    min_silence_duration_ms: float = Field(100, ge=0.0, le=3_600_000.0, description="shorter silence is kept")
    speech_pad_ms: float = Field(30, ge=0.0, le=60_000.0, description="padding around each segment")
    max_speech_duration_s: float | None = Field(None, gt=0.0, description="longer speech is split")
    return_speech: bool = Field(False, description="also answer the speech cut out of the audio (FLAC)")
    speech_sample_rate: int = Field(24000, ge=8000, le=48000, description="rate of the returned speech")


class VadParams(FormFields, VadOptions):
    """Router -> VAD service: the fields beside ``file`` on ``POST /v1/audio/vad`` (Silero's options)."""

    model: str | None = None
    max_audio_seconds: float | None = Field(None, gt=0, description="decode at most this (the router's quota hold); "
                                            "past it 400 audio_too_long, and the router holds more and sends again")


class SpeechSegment(BaseModel):
    start: float
    end: float


class EncodedAudio(BaseModel):
    """Audio inside a JSON answer: base64 of an encoded file."""

    format: Literal["flac", "wav"] = "flac"
    sample_rate: int
    data: str


class VadResult(BaseModel):
    """VAD service -> router."""

    object: Literal["vad"] = "vad"
    model: str
    duration: float
    segments: list[SpeechSegment]
    speech_seconds: float
    speech: EncodedAudio | None = None


MAX_VAD_STREAM_SECONDS = 10.0  # one call of a live stream: the frames that came since its last call


class VadStreamRequest(BaseModel):
    """Router -> VAD service (``POST /v1/audio/vad/stream``, JSON): the next whole frames of a live stream (a
    realtime session), and the state its previous frames left. The service keeps nothing between calls."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    audio: str = Field(..., description="base64 of 16-bit little-endian mono PCM at the model's rate, a whole "
                       "number of frames", max_length=int(MAX_VAD_STREAM_SECONDS * 16000 * 2 * 4 / 3) + 8)
    state: str | None = Field(None, description="base64 of the float32 state the last answer gave; none at the "
                              "start", max_length=65536)


class VadStreamResult(BaseModel):
    """VAD service -> router: the speech probability of each frame sent, and the state to send with the next."""

    model: str
    frame_samples: int
    sample_rate: int
    probabilities: list[float]
    state: str


# ---------------------------------------------------------------------------- speaker embedding


class EmbeddingParams(FormFields):
    """Router -> voice service: fields beside one or more ``file`` on ``POST /v1/audio/embeddings``.

    ``segments`` (JSON: one list of ``{"start", "end"}`` per file) restricts each file to its speech.
    """

    model: str | None = None
    min_speech_seconds: float = Field(0.5, ge=0.0, le=60.0)
    segments: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = 0
    embedding: list[float]


class EmbeddingResult(BaseModel):
    """Voice service -> router."""

    object: Literal["list"] = "list"
    model: str
    speech_seconds: float
    data: list[EmbeddingData]


class EmbeddingWindowsParams(FormFields):
    """Router -> voice service: fields beside one ``file`` on ``POST /v1/audio/embeddings/windows`` (diarization).

    ``segments`` (JSON list of ``{"start", "end"}``, the VAD's speech) are embedded window by window, a window every
    ``step_s`` seconds; without them the whole file is.
    """

    model: str | None = None
    segments: str | None = None
    step_s: float = Field(0.5, ge=0.1, le=1.6, description="seconds between the starts of two windows")
    max_audio_seconds: float | None = Field(None, gt=0, description="decode at most this (the router's quota hold)")


class EmbeddingWindow(BaseModel):
    """One window of speech (seconds of the file) and its unit-length speaker embedding."""

    start: float
    end: float
    embedding: list[float]


class EmbeddingWindowsResult(BaseModel):
    """Voice service -> router: the windows of every speech segment, in time order."""

    object: Literal["list"] = "list"
    model: str
    duration: float
    window_seconds: float
    data: list[EmbeddingWindow]


# ---------------------------------------------------------------------------- voice conversion and the voice store


class ConversionParams(FormFields):
    """Router -> voice service: fields beside ``file`` (and ``reference``) on ``POST /v1/audio/conversions``."""

    model: str | None = None
    voice: str | None = None
    response_format: AudioFormat = "wav"
    sample_rate: int = Field(24000, ge=8000, le=48000)


class VoiceRegistration(FormFields):
    """Router -> voice service: fields beside ``reference`` (the cleaned speech) on ``POST /v1/voices``."""

    model: str | None = None
    name: str = Field(..., min_length=1, max_length=128)
    embedding: str = Field(..., description="JSON list of numbers")
    embedding_model: str = ""
    reference_files: int = Field(1, ge=1, le=100)
    owner_key_id: str | None = Field(None, max_length=32, description="the API key that registers the voice")


class RegisteredVoice(BaseModel):
    """Voice service -> router: a registered voice as the API shows it (its statistics stay in the store)."""

    id: str
    object: Literal["voice"] = "voice"
    name: str
    created_at: int
    embedding: list[FiniteFloat]
    embedding_model: str
    converter: str
    speech_seconds: FiniteFloat
    reference_files: int = 1
    reference_sample_rate: int


class RegisteredVoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RegisteredVoice]


class VoiceDeleted(BaseModel):
    id: str
    object: Literal["voice.deleted"] = "voice.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------- operator -> router


LAST_REQUEST_ANNOTATION = "harmony.dev/last-request"
"""Formerly router -> operator (the router patched SpeechModels): no longer written or read; kept out of kopf's diff."""

DEMAND_LEASE_PREFIX = "harmony-demand-"
"""Router -> operator: demand for a SpeechModel that scales to zero is a coordination.k8s.io/v1 Lease named
``harmony-demand-<model>`` in the model's namespace, labelled :data:`DEMAND_LABEL`. The router creates and renews it
(``spec.renewTime``: when the model was last asked for, or is still waited for); it never writes SpeechModels."""
DEMAND_LABEL = "harmony.dev/demand"


def demand_lease_name(model: str) -> str:
    return DEMAND_LEASE_PREFIX + model


def demand_lease_model(lease: str) -> str | None:
    """The model a demand Lease is for (None: not a demand Lease's name)."""
    return lease[len(DEMAND_LEASE_PREFIX):] if lease.startswith(DEMAND_LEASE_PREFIX) else None


class RouterModelEntry(BaseModel):
    """One SpeechModel in the router's model table: its spec and the URL of its Service."""

    model_config = ConfigDict(extra="forbid")

    name: ModelName
    endpoint: str
    spec: SpeechModelSpec
    ready_replicas: int | None = Field(None, ge=0, description="set for a model that scales to zero: 0 means the "
                                       "router holds its requests until a replica is ready")

    def named(self) -> NamedModel:
        return NamedModel.model_validate({**self.spec.model_dump(by_alias=True), "name": self.name})


class RouterRouteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ModelName
    spec: SpeechRouteSpec

    def named(self) -> NamedRoute:
        return NamedRoute.model_validate({**self.spec.model_dump(by_alias=True), "name": self.name})


class RouterModels(BaseModel):
    """The file ``models.yaml`` of the router's ConfigMap: written by the operator, read by the router."""

    model_config = ConfigDict(extra="forbid")

    models: list[RouterModelEntry] = Field(default_factory=list)
    routes: list[RouterRouteEntry] = Field(default_factory=list)

    def to_yaml(self) -> str:
        """Only what differs from the defaults, Kubernetes field names, sorted by name (stable output)."""
        data = {
            "models": [{"name": m.name, "endpoint": m.endpoint,
                        **({} if m.ready_replicas is None else {"ready_replicas": m.ready_replicas}),
                        "spec": m.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
                       for m in sorted(self.models, key=lambda m: m.name)],
            "routes": [{"name": r.name, "spec": r.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)}
                       for r in sorted(self.routes, key=lambda r: r.name)],
        }
        return yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> RouterModels:
        """Parse the file; raises yaml.YAMLError or pydantic.ValidationError for a bad one."""
        return cls.model_validate(yaml.safe_load(text) or {})


# ---------------------------------------------------------------------------- operator -> Kubernetes API (status)


class Condition(BaseModel):
    """A status condition in the Kubernetes convention."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., description="Ready, Progressing or Degraded")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., description="one CamelCase word, e.g. MinimumReplicasReady, MissingModel")
    message: str = ""
    lastTransitionTime: str = Field(..., json_schema_extra={"format": "date-time"})
    observedGeneration: int | None = None


class WeightsProgress(BaseModel):
    """Where fetching a model's weights stands: answered by a model service's ``/readyz`` while it loads, printed
    by ``harmony pull --json`` (one line per change, the last one also as the container's termination message),
    and copied by the operator into the SpeechModel's ``status.weights``."""

    model_config = ConfigDict(extra="forbid")

    phase: Literal["resolving", "downloading", "verifying", "ready", "failed"] = "resolving"
    source: str = Field("", description="the source, e.g. hf://Systran/faster-whisper-small@main")
    revision: str | None = Field(None, description="the commit a Hugging Face revision resolved to (pinned)")
    bytesDone: int = Field(0, ge=0, description="bytes in the cache so far (downloaded, or found there)")
    bytesTotal: int | None = Field(None, ge=0, description="bytes of the whole model, once known")
    filesDone: int = Field(0, ge=0)
    filesTotal: int | None = Field(None, ge=0)
    path: str | None = Field(None, description="the model's directory (or file) in the cache, once ready")
    message: str = Field("", description="what failed, or the file being fetched")


class SpeechModelStatus(BaseModel):
    """Written by the operator."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(0, description="pods of the model service (scale subresource)")
    readyReplicas: int = Field(0, description="pods that passed /readyz")
    selector: str = Field("", description="label selector of the pods (scale subresource)")
    endpoint: str = Field("", description="URL of the model service inside the cluster")
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    weights: WeightsProgress | None = Field(None, description="fetching the weights of a hf, url or oci source: "
                                            "the resolved revision and the bytes done")
    coldStartSeconds: float | None = Field(None, ge=0, description="the last cold start from zero replicas (woken "
                                           "to the first ready replica), in seconds: unset until measured")


class SpeechRouteStatus(BaseModel):
    """Written by the operator."""

    model_config = ConfigDict(extra="forbid")

    missingModels: list[str] = Field(default_factory=list, description="steps' models that do not exist")
    unreadySteps: list[str] = Field(default_factory=list, description="steps whose SpeechModel is not Ready, "
                                    "with the model's reason")
    observedGeneration: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
