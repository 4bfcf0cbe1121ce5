"""Any upload OpenAI accepts (wav, flac, mp3, ogg/opus, ogg/vorbis, m4a/aac/mp4, webm, mpeg/mpga, ...) decoded to mono
float32 at a requested rate: libsndfile (soundfile) for what it reads quickly, FFmpeg (PyAV) for everything else and
whatever libsndfile refuses. The length is counted on the decoded samples, never taken from a header, and decoding stops
at the caller's limit."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np
import soxr

from services.core.audio.inputs import open_input
from services.core.audio.samples import check_rate, int_to_float
from services.core.contracts.errors import InvalidAudio

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


def soundfile_seconds(data: bytes) -> float | None:
    """The length a recording's header states, read by libsndfile without decoding; None when it cannot say."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not a format libsndfile reads: the caller may ask PyAV
        return None
    return info.frames / info.samplerate if info.samplerate > 0 and 0 < info.frames < 2 ** 40 else None


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
        arr = int_to_float(arr)
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
    sample_rate = check_rate(sample_rate)
    limit = float(MAX_DECODE_SECONDS if max_seconds is None else min(max_seconds, MAX_DECODE_SECONDS))
    try:
        head, source = open_input(data)
        no_samples = False
        if head in _SOUNDFILE_MAGIC:
            samples, no_samples = _try_soundfile(source, sample_rate, limit)
            if samples is not None:
                return samples
        return _decode_with_pyav(source, sample_rate, no_samples, limit)
    except InvalidAudio as exc:
        exc.param = exc.param or param
        raise
