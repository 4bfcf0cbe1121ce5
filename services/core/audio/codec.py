"""Audio decoding, resampling and encoding shared by every speech service.

Everything here works on mono float32 numpy arrays with values in [-1, 1].

* ``decode_audio`` turns any upload OpenAI accepts (wav, flac, mp3, ogg/opus,
  ogg/vorbis, m4a/aac/mp4, webm, mpeg/mpga, ...) into mono float32 at the
  requested rate. libsndfile (soundfile) handles wav/flac/ogg quickly;
  everything else, and whatever libsndfile rejects, goes through FFmpeg (PyAV).
  Nothing touches the file system when the input is bytes or a file object.
* ``resample`` uses soxr.
* ``encode_audio`` writes one complete file of a ``response_format``.
* ``StreamingEncoder`` produces the same formats incrementally for streamed
  responses; the concatenation of every chunk it returns is a valid file.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO, Callable

import numpy as np
import soxr
from services.core.contracts.errors import InvalidAudio, InvalidRequest
from services.core.contracts.formats import AUDIO_FORMATS, CONTENT_TYPES, AudioFormat

__all__ = [
    "AudioFormat",
    "AUDIO_FORMATS",
    "AudioTooLong",
    "CONTENT_TYPES",
    "StreamingEncoder",
    "decode_audio",
    "encode_audio",
    "resample",
]

# Decoded audio longer than this is refused whatever the caller allows: a small, highly compressed upload
# (e.g. hours of FLAC silence) must not be able to exhaust memory. Services pass a smaller per-request
# limit (a model's ``limits.max_audio_seconds``); either is enforced while decoding, never after.
MAX_DECODE_SECONDS = 4 * 3600
# The sample rates a header may claim. Below 4 kHz no speech codec samples (a header claiming 1 Hz would
# make a few KB into hours of "audio"); above 384 kHz no audio interface records.
MIN_SOURCE_RATE = 4000
MAX_SOURCE_RATE = 384_000

# Inputs whose magic bytes libsndfile understands; everything else goes to FFmpeg.
_SOUNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM")
_SF_BLOCK = 1 << 18  # frames per soundfile read

# Codec settings for the formats encoded with PyAV.
#   container: FFmpeg muxer, codec: encoder, rates: rates the codec accepts
#   (None: any), fallback: rate used when the input rate is not accepted,
#   bit_rate: for (rate <= 24000, rate > 24000).
_AV_SPECS: dict[str, dict] = {
    "mp3": {
        "container": "mp3",
        "codec": "libmp3lame",
        "rates": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        "fallback": 48000,
        "bit_rate": (64000, 128000),
        "options": {},
    },
    "opus": {
        "container": "ogg",
        "codec": "libopus",
        "rates": (8000, 12000, 16000, 24000, 48000),
        "fallback": 48000,
        "bit_rate": (48000, 64000),
        # Ogg pages are cut every 100 ms instead of every second, so streamed
        # opus reaches the client without a one-second lag.
        "options": {"page_duration": "100000"},
    },
    "aac": {
        "container": "adts",
        "codec": "aac",
        # ADTS cannot signal the encoder's 1024-sample priming, so decoders
        # play it as leading silence. At 44.1/48 kHz that costs ~21 ms instead
        # of ~43-46 ms at 22.05/24 kHz, so AAC is always written at 44.1/48 kHz.
        "rates": (44100, 48000),
        "fallback": 48000,
        "bit_rate": (96000, 96000),
        "options": {},
    },
    "flac": {
        "container": "flac",
        "codec": "flac",
        "rates": None,
        "fallback": 48000,
        "bit_rate": (0, 0),
        # No 8 KiB PADDING block: nothing edits tags afterwards, and it would
        # only delay the first audio frame of a stream.
        "options": {"metadata_header_padding": "0"},
    },
}


# --------------------------------------------------------------------------- helpers


def _check_format(fmt: str) -> AudioFormat:
    for known in AUDIO_FORMATS:
        if fmt == known:
            return known
    raise InvalidRequest(
        f"Unsupported response_format {fmt!r}; expected one of {', '.join(AUDIO_FORMATS)}.",
        param="response_format",
        code="invalid_value",
    )


def _check_rate(rate: int, name: str = "sample_rate") -> int:
    try:
        value = int(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {rate!r}") from None
    if value != rate or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    return value


def _as_mono_float(samples: np.ndarray) -> np.ndarray:
    """Any array-like of samples -> contiguous 1-D float32 clipped to [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim == 0:
        x = x.reshape(1)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
    if x.dtype.kind in "iu":
        x = _int_to_float(x)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0), dtype=np.float32)


def _int_to_float(x: np.ndarray) -> np.ndarray:
    info = np.iinfo(x.dtype)
    if info.min == 0:  # unsigned, e.g. 8-bit PCM centred on 128
        mid = (int(info.max) + 1) // 2
        return ((x.astype(np.float64) - mid) / mid).astype(np.float32)
    return (x.astype(np.float64) / float(-int(info.min))).astype(np.float32)


def pcm16_to_float(pcm: bytes | bytearray | memoryview, count: int = -1, offset: int = 0) -> np.ndarray:
    """Raw s16le samples (``count`` of them from byte ``offset``; -1: all) -> float32 in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2", count=count, offset=offset).astype(np.float32) / 32768.0


def _to_s16le(x: np.ndarray) -> bytes:
    return np.round(x * 32767.0).astype("<i2").tobytes()


def _wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
    """44-byte PCM s16 mono WAV header; ``data_bytes=None`` writes the
    0xFFFFFFFF "unknown length" sizes used for streaming."""
    if data_bytes is None:
        riff_size = data_size = 0xFFFFFFFF
    else:
        data_size = data_bytes
        riff_size = min(36 + data_bytes, 0xFFFFFFFF)
    return b"".join(
        (
            b"RIFF",
            riff_size.to_bytes(4, "little"),
            b"WAVEfmt ",
            (16).to_bytes(4, "little"),
            (1).to_bytes(2, "little"),  # PCM
            (1).to_bytes(2, "little"),  # mono
            sample_rate.to_bytes(4, "little"),
            (sample_rate * 2).to_bytes(4, "little"),  # byte rate
            (2).to_bytes(2, "little"),  # block align
            (16).to_bytes(2, "little"),  # bits per sample
            b"data",
            data_size.to_bytes(4, "little"),
        )
    )


# --------------------------------------------------------------------------- resampling


def soundfile_seconds(data: bytes) -> float | None:
    """The length a recording's header states, read by libsndfile without decoding; None when it cannot say."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not a format libsndfile reads: the caller may ask PyAV
        return None
    return info.frames / info.samplerate if info.samplerate > 0 and 0 < info.frames < 2 ** 40 else None


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample with soxr (high quality). Returns float32; a no-op (apart
    from the dtype) when the rates are equal."""
    src_rate = _check_rate(src_rate, "src_rate")
    dst_rate = _check_rate(dst_rate, "dst_rate")
    x = np.asarray(samples, dtype=np.float32)
    if src_rate == dst_rate:
        return x
    if x.shape[0] == 0:
        return np.zeros((0, *x.shape[1:]), dtype=np.float32)
    return np.asarray(soxr.resample(np.ascontiguousarray(x), src_rate, dst_rate, quality="HQ"), dtype=np.float32)


class AudioTooLong(InvalidAudio):
    """The decoded audio is longer than the request may be (counted on the decoded stream, never from a header)."""

    default_code = "audio_too_long"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.4g} h"
    if seconds >= 60:
        return f"{seconds / 60:.4g} min"
    return f"{seconds:.4g} s"


class _Collector:
    """Accumulates decoded mono chunks, resampling each rate segment to the
    target rate on the fly so memory stays proportional to the output.

    The duration is the count of decoded samples, never a header's claim; decoding stops
    at the first chunk past ``max_seconds``."""

    def __init__(self, dst_rate: int, max_seconds: float = MAX_DECODE_SECONDS) -> None:
        self.dst_rate = dst_rate
        self.max_seconds = max_seconds
        self.max_samples = int(max_seconds * dst_rate)
        self.parts: list[np.ndarray] = []
        self.total = 0
        self.src_rate: int | None = None
        self.stream: soxr.ResampleStream | None = None

    def _emit(self, y: np.ndarray) -> None:
        if y.size:
            self.parts.append(np.asarray(y, dtype=np.float32))
            self.total += y.size
            if self.total > self.max_samples:
                raise AudioTooLong(
                    f"The audio is longer than this request may be: decoding stopped after "
                    f"{_duration(self.total / self.dst_rate)} (measured on the decoded audio), and the limit is "
                    f"{_duration(self.max_seconds)}. Split the recording into shorter files.")

    def _finish_segment(self) -> None:
        if self.stream is not None:
            self._emit(self.stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self.stream = None

    def add(self, mono: np.ndarray, rate: int) -> None:
        if mono.size == 0:
            return
        _check_source_rate(rate)
        if rate != self.src_rate:
            self._finish_segment()
            self.src_rate = rate
            if rate != self.dst_rate:
                self.stream = soxr.ResampleStream(rate, self.dst_rate, 1, dtype="float32", quality="HQ")
        if self.stream is None:
            self._emit(mono)
        else:
            self._emit(self.stream.resample_chunk(mono))

    def result(self) -> np.ndarray:
        self._finish_segment()
        if not self.parts:
            return np.zeros(0, dtype=np.float32)
        out = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        if not np.isfinite(out).all():
            out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- decoding


def _check_source_rate(rate: int) -> None:
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise InvalidAudio(f"The audio claims a sample rate of {rate} Hz; a rate from {MIN_SOURCE_RATE} to "
                           f"{MAX_SOURCE_RATE} Hz is required (the file's header is wrong or the file is not audio).",
                           code="invalid_sample_rate")


class _NoSamples(Exception):
    """The container was understood but holds no audio samples."""


def _decode_soundfile(source, sample_rate: int, max_seconds: float) -> np.ndarray:
    import soundfile as sf

    collector = _Collector(sample_rate, max_seconds)
    with sf.SoundFile(source) as f:
        rate = int(f.samplerate)
        if rate <= 0 or f.channels <= 0:
            raise ValueError("bad stream parameters")
        _check_source_rate(rate)  # refused before a sample is read
        while True:
            # Bounded blocks: the frame count in a (streamed or broken) header
            # can be bogus, so never let soundfile size one huge array from it.
            block = f.read(_SF_BLOCK, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            collector.add(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0], rate)
            if block.shape[0] < _SF_BLOCK:
                break
    out = collector.result()
    if out.size == 0:
        raise _NoSamples()
    return out


def _frame_to_mono(frame) -> np.ndarray:
    arr = frame.to_ndarray()
    channels = frame.layout.nb_channels or 1
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype.kind in "iu":
        arr = _int_to_float(arr)
    arr = arr.astype(np.float32, copy=False)
    return arr.mean(axis=0, dtype=np.float32) if arr.shape[0] > 1 else arr[0]


def _decode_pyav(source, sample_rate: int, max_seconds: float) -> np.ndarray:
    import av

    collector = _Collector(sample_rate, max_seconds)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise InvalidAudio(f"Could not decode audio: unrecognised or corrupt file ({exc.strerror or exc}).") from None
    with container:
        if not container.streams.audio:
            raise InvalidAudio("Could not decode audio: the file contains no audio stream.")
        stream = container.streams.audio[0]
        errors = 0
        last_error: Exception | None = None

        def consume(frames) -> None:
            for frame in frames:
                if frame.sample_rate and frame.samples:
                    collector.add(_frame_to_mono(frame), int(frame.sample_rate))

        try:
            for packet in container.demux(stream):
                try:
                    consume(packet.decode())
                except (av.FFmpegError, ValueError) as exc:
                    # A damaged packet: skip it, like ffmpeg does, but give up
                    # on streams that are mostly garbage.
                    errors += 1
                    last_error = exc
                    if errors > 100 and collector.total == 0:
                        break
        except av.FFmpegError as exc:  # demuxer gave up mid-file: keep what we have
            last_error = exc
        try:
            consume(stream.decode(None))  # drain the decoder
        except (av.FFmpegError, ValueError) as exc:
            last_error = exc
    out = collector.result()
    if out.size == 0:
        if last_error is not None:
            raise InvalidAudio(f"Could not decode audio: {getattr(last_error, 'strerror', None) or last_error}.")
        raise _NoSamples()
    return out


def _path_input(data: str | os.PathLike) -> tuple[bytes, Callable[[], Any]]:
    """(first four bytes, a function giving the decoders their input) for a path.

    Raises InvalidAudio for an empty file; a path that cannot be read raises
    the usual OSError.
    """
    path = os.fspath(data)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.getsize(path) == 0:
        raise InvalidAudio("The audio file is empty.")
    with open(path, "rb") as fh:
        head = fh.read(4)

    def source():
        return path

    return head, source


def _read_bytes(data: bytes | bytearray | memoryview | BinaryIO) -> bytes:
    """The whole content of a bytes-like object or of a binary file object.

    Raises InvalidAudio for a text-mode file object and for empty input,
    TypeError for anything else.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    elif hasattr(data, "read"):
        raw = data.read()
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise InvalidAudio("The audio file must be read in binary mode.")
        raw = bytes(raw)
    else:
        raise TypeError(f"decode_audio() cannot read {type(data).__name__}")
    if not raw:
        raise InvalidAudio("The audio file is empty.")
    return raw


def _open_input(data: bytes | str | os.PathLike | BinaryIO) -> tuple[bytes, Callable[[], Any]]:
    """(first four bytes, a function giving a fresh decoder input on each call)
    for a path, bytes or a binary file object; see ``_path_input`` and
    ``_read_bytes`` for the errors. Bytes and file objects never touch the
    file system.
    """
    if isinstance(data, (str, os.PathLike)):
        return _path_input(data)
    raw = _read_bytes(data)

    def source():
        return io.BytesIO(raw)

    return raw[:4], source


def _try_soundfile(source: Callable[[], Any], sample_rate: int, max_seconds: float
                   ) -> tuple[np.ndarray | None, bool]:
    """libsndfile's attempt at ``source()``, as (samples, no_samples).

    (samples, False) when it decoded; (None, True) when it understood the
    container but found no samples, possibly a header with an unknown length
    (streamed FLAC/WAV) that FFmpeg should have a look at before the input is
    called empty; (None, False) when it refused the data (FFmpeg may not).
    InvalidAudio (audio too long, an impossible sample rate) is raised as is.
    """
    try:
        return _decode_soundfile(source(), sample_rate, max_seconds), False
    except InvalidAudio:
        raise
    except _NoSamples:
        return None, True
    except Exception:  # noqa: BLE001 - libsndfile refused; FFmpeg may not
        return None, False


def _decode_with_pyav(source: Callable[[], Any], sample_rate: int, no_samples: bool, max_seconds: float
                      ) -> np.ndarray:
    """FFmpeg's (PyAV's) decoding of ``source()``, every failure raised as InvalidAudio.

    ``no_samples``: libsndfile already found the container empty, so an
    InvalidAudio from FFmpeg is reported as "no audio samples" instead
    (except for audio that is too long).
    """
    try:
        return _decode_pyav(source(), sample_rate, max_seconds)
    except _NoSamples:
        pass
    except AudioTooLong:
        raise
    except InvalidAudio:
        if no_samples:
            raise InvalidAudio("The audio file contains no audio samples.") from None
        raise
    except MemoryError:
        raise InvalidAudio("The audio file is too large to decode.") from None
    except Exception as exc:  # noqa: BLE001 - any other decoder failure is bad input
        raise InvalidAudio(f"Could not decode audio: {exc}") from None
    raise InvalidAudio("The audio file contains no audio samples.")


def decode_audio(data: bytes | str | os.PathLike | BinaryIO, sample_rate: int = 16000, *,
                 max_seconds: float | None = None, param: str = "file") -> np.ndarray:
    """Any container OpenAI accepts (wav, flac, mp3, ogg/opus, ogg/vorbis,
    m4a/aac/mp4, webm, mpeg/mpga) -> mono float32 at ``sample_rate``, values
    in [-1, 1]. Multi-channel audio is downmixed by averaging.

    Inputs whose magic bytes libsndfile understands are tried with it first;
    everything else, and whatever it refuses or finds empty, goes to FFmpeg.

    Raises InvalidAudio (naming ``param``, the form field) with a clear message for
    undecodable data, for empty input, for audio with zero samples and for a header
    claiming a sample rate outside 4 kHz .. 384 kHz; AudioTooLong as soon as the decoded
    audio passes ``max_seconds`` (at most MAX_DECODE_SECONDS): the length is counted
    on the decoded samples, never taken from a header, and decoding stops there.
    A path that cannot be read raises the usual OSError.
    """
    sample_rate = _check_rate(sample_rate)
    limit = float(MAX_DECODE_SECONDS if max_seconds is None else min(max_seconds, MAX_DECODE_SECONDS))
    try:
        head, source = _open_input(data)
        no_samples = False
        if head in _SOUNDFILE_MAGIC:
            samples, no_samples = _try_soundfile(source, sample_rate, limit)
            if samples is not None:
                return samples
        return _decode_with_pyav(source, sample_rate, no_samples, limit)
    except InvalidAudio as exc:
        exc.param = exc.param or param
        raise


# --------------------------------------------------------------------------- encoding


def _target_rate(spec: dict, sample_rate: int) -> int:
    rates = spec["rates"]
    if rates is None:
        return sample_rate if sample_rate <= 655350 else spec["fallback"]
    if sample_rate in rates:
        return sample_rate
    higher = [r for r in rates if r > sample_rate]
    return min(higher) if higher else spec["fallback"]


class _Sink:
    """Write-only, non-seekable byte sink. Being unseekable makes the muxers
    behave as for a pipe: nothing is rewritten afterwards, and the I/O buffer
    is flushed after every packet."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, b) -> int:
        self.buf += b
        return len(b)

    def drain(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


class _AVEncoder:
    """PyAV encoder+muxer for the compressed formats, fed mono float32 at the
    codec's rate. ``seekable=True`` (one-shot files) lets the muxer go back
    and fill in headers (mp3 Xing/LAME gapless info, FLAC STREAMINFO)."""

    def __init__(self, fmt: str, rate: int, *, seekable: bool) -> None:
        import av

        spec = _AV_SPECS[fmt]
        self._av = av
        self.rate = rate
        self.sink: io.BytesIO | _Sink = io.BytesIO() if seekable else _Sink()
        self.container = av.open(
            self.sink, mode="w", format=spec["container"], container_options=dict(spec["options"])
        )
        self.stream = self.container.add_stream(spec["codec"], rate=rate, layout="mono")
        bit_rate = spec["bit_rate"][0 if rate <= 24000 else 1]
        if bit_rate:
            self.stream.codec_context.bit_rate = bit_rate
        self.pts = 0
        # Write the container header now, so even an empty stream is a valid file.
        self.container.start_encoding()

    def _mux(self, packets) -> None:
        for packet in packets:
            self.container.mux(packet)

    def encode(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        frame = self._av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        self.pts += x.size
        self._mux(self.stream.encode(frame))

    def drain(self) -> bytes:
        assert isinstance(self.sink, _Sink)
        return self.sink.drain()

    def close(self) -> bytes:
        """Flush the encoder, write the trailer; returns the bytes not yet drained."""
        try:
            self._mux(self.stream.encode(None))
        finally:
            self.container.close()
        if isinstance(self.sink, _Sink):
            return self.sink.drain()
        return self.sink.getvalue()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: AudioFormat) -> bytes:
    """Mono float32 at ``sample_rate`` -> one complete file of ``fmt``.

    pcm is raw s16le without a header and wav is 16-bit PCM, both at
    ``sample_rate``. mp3 and opus keep the rate when the codec accepts it,
    otherwise use the next higher legal one (opus: 8/12/16/24/48 kHz); aac is
    ADTS at 44.1/48 kHz; flac keeps the rate. Raises InvalidRequest
    (param='response_format') for an unknown ``fmt``.
    """
    fmt = _check_format(fmt)
    sample_rate = _check_rate(sample_rate)
    x = _as_mono_float(samples)
    if fmt == "pcm":
        return _to_s16le(x)
    if fmt == "wav":
        pcm = _to_s16le(x)
        return _wav_header(sample_rate, len(pcm)) + pcm
    spec = _AV_SPECS[fmt]
    rate = _target_rate(spec, sample_rate)
    encoder = _AVEncoder(fmt, rate, seekable=True)
    encoder.encode(np.clip(resample(x, sample_rate, rate), -1.0, 1.0))
    return encoder.close()


class StreamingEncoder:
    """Incremental encoder for streaming responses::

        enc = StreamingEncoder("mp3", 24000)
        for chunk in chunks:
            yield enc.push(chunk)   # whatever encoded bytes are ready, maybe b""
        yield enc.close()           # the rest; the encoder is fully flushed

    The concatenation of every returned chunk is a valid file of ``fmt``:
    wav gets a header with 0xFFFFFFFF ("unknown") sizes up front, pcm is raw
    s16le, and mp3/opus/aac/flac are muxed by PyAV into a non-seekable
    in-memory sink that is drained after every push (so mp3 has no Xing
    header and FLAC's STREAMINFO carries no total length or MD5).
    """

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.fmt = _check_format(fmt)
        self.sample_rate = _check_rate(sample_rate)
        self.content_type = CONTENT_TYPES[self.fmt]
        self._closed = False
        self._header_sent = False
        self._encoder: _AVEncoder | None = None
        self._resampler: soxr.ResampleStream | None = None
        self.output_rate = self.sample_rate
        if self.fmt in _AV_SPECS:
            self.output_rate = _target_rate(_AV_SPECS[self.fmt], self.sample_rate)
            self._encoder = _AVEncoder(self.fmt, self.output_rate, seekable=False)
            if self.output_rate != self.sample_rate:
                self._resampler = soxr.ResampleStream(
                    self.sample_rate, self.output_rate, 1, dtype="float32", quality="HQ"
                )

    def _wav_prefix(self) -> bytes:
        if self.fmt == "wav" and not self._header_sent:
            self._header_sent = True
            return _wav_header(self.sample_rate, None)
        return b""

    def push(self, samples: np.ndarray) -> bytes:
        """Encode more mono float32 samples; returns the encoded bytes ready so far."""
        if self._closed:
            raise RuntimeError("StreamingEncoder is closed")
        x = _as_mono_float(samples)
        if self.fmt == "pcm":
            return _to_s16le(x)
        if self.fmt == "wav":
            return self._wav_prefix() + _to_s16le(x)
        assert self._encoder is not None
        if self._resampler is not None and x.size:
            x = self._resampler.resample_chunk(x)
        self._encoder.encode(x)
        return self._encoder.drain()

    def close(self) -> bytes:
        """Flush everything; returns the final bytes. Further calls return b""."""
        if self._closed:
            return b""
        self._closed = True
        if self._encoder is None:
            return self._wav_prefix()
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            self._encoder.encode(np.clip(tail, -1.0, 1.0).astype(np.float32, copy=False))
        return self._encoder.close()
