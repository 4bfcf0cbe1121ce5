"""The answer formats encoded incrementally, for streamed responses: every chunk joined is a valid file."""

from __future__ import annotations

import numpy as np
import soxr

from services.core.audio.encode import AV_SPECS, AVEncoder, check_format, target_rate
from services.core.audio.samples import as_mono_float, check_rate, to_s16le, wav_header
from services.core.contracts.formats import CONTENT_TYPES, AudioFormat


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
        self.fmt = check_format(fmt)
        self.sample_rate = check_rate(sample_rate)
        self.content_type = CONTENT_TYPES[self.fmt]
        self._closed = False
        self._header_sent = False
        self._encoder: AVEncoder | None = None
        self._resampler: soxr.ResampleStream | None = None
        self.output_rate = self.sample_rate
        if self.fmt in AV_SPECS:
            self.output_rate = target_rate(AV_SPECS[self.fmt], self.sample_rate)
            self._encoder = AVEncoder(self.fmt, self.output_rate, seekable=False)
            if self.output_rate != self.sample_rate:
                self._resampler = soxr.ResampleStream(
                    self.sample_rate, self.output_rate, 1, dtype="float32", quality="HQ"
                )

    def _wav_prefix(self) -> bytes:
        if self.fmt == "wav" and not self._header_sent:
            self._header_sent = True
            return wav_header(self.sample_rate, None)
        return b""

    def push(self, samples: np.ndarray) -> bytes:
        """Encode more mono float32 samples; returns the encoded bytes ready so far."""
        if self._closed:
            raise RuntimeError("StreamingEncoder is closed")
        x = as_mono_float(samples)
        if self.fmt == "pcm":
            return to_s16le(x)
        if self.fmt == "wav":
            return self._wav_prefix() + to_s16le(x)
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
