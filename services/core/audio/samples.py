"""Samples as every audio module holds them: mono float32 in [-1, 1], checked rates, 16-bit PCM, WAV headers, and
resampling (soxr)."""

from __future__ import annotations

import numpy as np
import soxr


def check_rate(rate: int, name: str = "sample_rate") -> int:
    try:
        value = int(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {rate!r}") from None
    if value != rate or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    return value


def as_mono_float(samples: np.ndarray) -> np.ndarray:
    """Any array-like of samples -> contiguous 1-D float32 clipped to [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim == 0:
        x = x.reshape(1)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples (1-D array), got shape {x.shape}")
    if x.dtype.kind in "iu":
        x = int_to_float(x)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0), dtype=np.float32)


def int_to_float(x: np.ndarray) -> np.ndarray:
    info = np.iinfo(x.dtype)
    if info.min == 0:  # unsigned, e.g. 8-bit PCM centred on 128
        mid = (int(info.max) + 1) // 2
        return ((x.astype(np.float64) - mid) / mid).astype(np.float32)
    return (x.astype(np.float64) / float(-int(info.min))).astype(np.float32)


def pcm16_to_float(pcm: bytes | bytearray | memoryview, count: int = -1, offset: int = 0) -> np.ndarray:
    """Raw s16le samples (``count`` of them from byte ``offset``; -1: all) -> float32 in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2", count=count, offset=offset).astype(np.float32) / 32768.0


def to_s16le(x: np.ndarray) -> bytes:
    return np.round(x * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None) -> bytes:
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


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample with soxr (high quality). Returns float32; a no-op (apart
    from the dtype) when the rates are equal."""
    src_rate = check_rate(src_rate, "src_rate")
    dst_rate = check_rate(dst_rate, "dst_rate")
    x = np.asarray(samples, dtype=np.float32)
    if src_rate == dst_rate:
        return x
    if x.shape[0] == 0:
        return np.zeros((0, *x.shape[1:]), dtype=np.float32)
    return np.asarray(soxr.resample(np.ascontiguousarray(x), src_rate, dst_rate, quality="HQ"), dtype=np.float32)
