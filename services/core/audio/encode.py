"""One complete file of a ``response_format`` from mono float32: pcm and wav written here, mp3, opus, aac and flac
muxed by PyAV at a rate their codec takes (``AV_SPECS``)."""

from __future__ import annotations

import io

import numpy as np

from services.core.audio.samples import as_mono_float, check_rate, resample, to_s16le, wav_header
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.formats import AUDIO_FORMATS, AudioFormat

# Codec settings for the formats encoded with PyAV.
#   container: FFmpeg muxer, codec: encoder, rates: rates the codec accepts
#   (None: any), fallback: rate used when the input rate is not accepted,
#   bit_rate: for (rate <= 24000, rate > 24000).
AV_SPECS: dict[str, dict] = {
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


def check_format(fmt: str) -> AudioFormat:
    for known in AUDIO_FORMATS:
        if fmt == known:
            return known
    raise InvalidRequest(
        f"Unsupported response_format {fmt!r}; expected one of {', '.join(AUDIO_FORMATS)}.",
        param="response_format",
        code="invalid_value",
    )


def target_rate(spec: dict, sample_rate: int) -> int:
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


class AVEncoder:
    """PyAV encoder+muxer for the compressed formats, fed mono float32 at the
    codec's rate. ``seekable=True`` (one-shot files) lets the muxer go back
    and fill in headers (mp3 Xing/LAME gapless info, FLAC STREAMINFO)."""

    def __init__(self, fmt: str, rate: int, *, seekable: bool) -> None:
        import av

        spec = AV_SPECS[fmt]
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
    fmt = check_format(fmt)
    sample_rate = check_rate(sample_rate)
    x = as_mono_float(samples)
    if fmt == "pcm":
        return to_s16le(x)
    if fmt == "wav":
        pcm = to_s16le(x)
        return wav_header(sample_rate, len(pcm)) + pcm
    spec = AV_SPECS[fmt]
    rate = target_rate(spec, sample_rate)
    encoder = AVEncoder(fmt, rate, seekable=True)
    encoder.encode(np.clip(resample(x, sample_rate, rate), -1.0, 1.0))
    return encoder.close()
