"""Round trips through services.core.audio: decode, resample, encode, stream."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from services.core.audio import (
    CONTENT_TYPES,
    StreamingEncoder,
    decode_audio,
    encode_audio,
    resample,
)
from services.core.contracts.errors import InvalidAudio, InvalidRequest

SR = 24000
DURATION = 1.5
TONE = 440.0
DECODE_SR = 16000
FORMATS = ["mp3", "opus", "aac", "flac", "wav", "pcm"]
CONTAINER_FORMATS = ["mp3", "opus", "aac", "flac", "wav"]

# Codec padding allowed on a decoded duration. AAC in ADTS cannot signal its
# 1024-sample priming; a streamed mp3 carries no Xing/LAME header, so its
# encoder delay (~1105 samples) plus last-frame padding stays in the decode.
TOLERANCE = 0.060
STREAM_TOLERANCE = {"mp3": 0.080}


def make_signal(sr: int = SR, duration: float = DURATION) -> np.ndarray:
    """0.5 * 440 Hz sine plus a quieter 1-4 kHz linear chirp."""
    t = np.arange(int(round(sr * duration))) / sr
    f0, f1 = 1000.0, 4000.0
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * duration) * t**2))
    return (0.5 * np.sin(2 * np.pi * TONE * t) + 0.1 * chirp).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def assert_tone(y: np.ndarray, sr: int = DECODE_SR, duration: float = DURATION, tol: float = TOLERANCE) -> None:
    assert y.dtype == np.float32
    assert y.ndim == 1
    assert abs(len(y) / sr - duration) <= tol, f"duration {len(y) / sr:.4f}s, expected {duration}s"
    assert abs(peak_hz(y, sr) - TONE) < 3.0
    assert np.abs(y).max() <= 1.0


def assert_invalid_audio(data) -> InvalidAudio:
    with pytest.raises(InvalidAudio) as info:
        decode_audio(data)
    exc = info.value
    assert exc.status_code == 400
    assert exc.code == "invalid_audio"
    assert exc.message
    return exc


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    return make_signal()


# --------------------------------------------------------------------------- encode_audio


def test_content_types():
    assert CONTENT_TYPES == {
        "mp3": "audio/mpeg",
        "opus": "audio/ogg",
        "aac": "audio/aac",
        "flac": "audio/flac",
        "wav": "audio/wav",
        "pcm": "audio/pcm",
    }


MAGIC = {
    "mp3": lambda b: b[:3] == b"ID3" or (b[0] == 0xFF and b[1] & 0xE0 == 0xE0),
    "opus": lambda b: b[:4] == b"OggS" and b"OpusHead" in b[:64],
    "aac": lambda b: b[0] == 0xFF and b[1] & 0xF6 == 0xF0,  # ADTS sync word, layer 0
    "flac": lambda b: b[:4] == b"fLaC",
    "wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
}


@pytest.mark.parametrize("fmt", CONTAINER_FORMATS)
def test_encode_roundtrip(signal, fmt):
    data = encode_audio(signal, SR, fmt)
    assert isinstance(data, bytes) and MAGIC[fmt](data)
    assert_tone(decode_audio(data, DECODE_SR))


def test_encode_pcm_is_raw_s16le(signal):
    data = encode_audio(signal, SR, "pcm")
    assert len(data) == 2 * len(signal)
    y = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    np.testing.assert_allclose(y, signal, atol=1e-4)
    assert_tone(resample(y, SR, DECODE_SR))


def test_wav_is_lossless_16bit(signal):
    data = encode_audio(signal, SR, "wav")
    assert len(data) == 44 + 2 * len(signal)
    y = decode_audio(data, SR)
    np.testing.assert_allclose(y, signal, atol=1e-4)


@pytest.mark.parametrize("fmt,rate", [("opus", 44100), ("opus", 22050), ("mp3", 44100), ("aac", 16000)])
def test_encode_resamples_to_codec_rates(fmt, rate):
    x = make_signal(rate, 1.0)
    assert_tone(decode_audio(encode_audio(x, rate, fmt), DECODE_SR), duration=1.0)


def test_encode_clips_and_accepts_integers():
    loud = make_signal() * 4  # way past full scale
    y = decode_audio(encode_audio(loud, SR, "wav"), SR)
    assert np.abs(y).max() <= 1.0 and np.abs(y).max() > 0.99
    ints = np.round(make_signal() * 32767).astype(np.int16)
    y = decode_audio(encode_audio(ints, SR, "flac"), SR)
    np.testing.assert_allclose(y, make_signal(), atol=2e-4)


def test_encode_unknown_format_raises_invalid_request(signal):
    with pytest.raises(InvalidRequest) as info:
        encode_audio(signal, SR, "ogg")  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.param == "response_format"
    assert not isinstance(info.value, InvalidAudio)
    with pytest.raises(InvalidRequest) as info:
        StreamingEncoder("m4a", SR)  # type: ignore[arg-type]
    assert info.value.param == "response_format"


# --------------------------------------------------------------------------- StreamingEncoder


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_encoder(signal, fmt):
    enc = StreamingEncoder(fmt, SR)
    assert enc.content_type == CONTENT_TYPES[fmt]
    pushed = [enc.push(chunk) for chunk in np.array_split(signal, 5)]
    final = enc.close()
    assert all(isinstance(c, bytes) for c in [*pushed, final])
    before_close = sum(len(c) for c in pushed)
    total = before_close + len(final)
    # Audio flows while pushing, not only at close.
    assert pushed[0], "first push returned nothing"
    assert before_close > total / 2
    data = b"".join([*pushed, final])
    if fmt == "pcm":
        assert data == encode_audio(signal, SR, "pcm")
        y = resample(np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, SR, DECODE_SR)
    else:
        assert MAGIC[fmt](data)
        y = decode_audio(data, DECODE_SR)
    assert_tone(y, tol=STREAM_TOLERANCE.get(fmt, TOLERANCE))


def test_streaming_wav_header_is_open_ended(signal):
    enc = StreamingEncoder("wav", SR)
    first = enc.push(signal[:100])
    assert first[:4] == b"RIFF" and first[8:12] == b"WAVE"
    assert first[4:8] == b"\xff\xff\xff\xff"  # RIFF size unknown
    assert first[36:40] == b"data" and first[40:44] == b"\xff\xff\xff\xff"
    assert len(first) == 44 + 200
    rest = enc.push(signal[100:]) + enc.close()
    np.testing.assert_allclose(decode_audio(first + rest, SR), signal, atol=1e-4)


@pytest.mark.parametrize("fmt", ["opus", "aac", "mp3"])
def test_streaming_with_internal_resampling(fmt):
    rate = 22050 if fmt != "mp3" else 44000  # not a rate the codec accepts
    x = make_signal(rate, 1.0)
    enc = StreamingEncoder(fmt, rate)
    data = b"".join([enc.push(c) for c in np.array_split(x, 7)] + [enc.close()])
    assert_tone(decode_audio(data, DECODE_SR), duration=1.0, tol=STREAM_TOLERANCE.get(fmt, TOLERANCE))


def test_streaming_encoder_lifecycle(signal):
    enc = StreamingEncoder("mp3", SR)
    enc.push(signal[:1000])
    assert enc.push(np.zeros(0, dtype=np.float32)) == b""
    enc.close()
    assert enc.close() == b""
    with pytest.raises(RuntimeError):
        enc.push(signal)
    # An empty stream is still a header-only file (wav) or nothing at all (pcm).
    assert StreamingEncoder("wav", SR).close()[:4] == b"RIFF"
    assert StreamingEncoder("pcm", SR).close() == b""


# --------------------------------------------------------------------------- decode_audio


class _Pipe:
    """Write-only file object: muxers treat it like a pipe (no seeking back)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b) -> int:
        self.data += b
        return len(b)

    def getvalue(self) -> bytes:
        return bytes(self.data)


def _write_with_pyav(fmt: str, codec: str, x: np.ndarray, rate: int, layout: str = "mono",
                     seekable: bool = True) -> bytes:
    buf = io.BytesIO() if seekable else _Pipe()
    with av.open(buf, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        planes = x.reshape(1, -1) if x.ndim == 1 else np.ascontiguousarray(x.T)
        frame = av.AudioFrame.from_ndarray(planes.astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("seekable", [True, False], ids=["file", "live"])
def test_decode_webm_opus(seekable):
    # "live" is what a browser's MediaRecorder sends: unknown element sizes, no cues.
    x = make_signal(48000)
    data = _write_with_pyav("webm", "libopus", x, 48000, seekable=seekable)
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML
    assert_tone(decode_audio(data, DECODE_SR))


def test_decode_ogg_vorbis():
    buf = io.BytesIO()
    sf.write(buf, make_signal(), SR, format="OGG", subtype="VORBIS")
    data = buf.getvalue()
    assert data[:4] == b"OggS" and b"vorbis" in data[:64]
    assert_tone(decode_audio(data, DECODE_SR))


def test_decode_m4a_aac():
    x = make_signal(44100)
    data = _write_with_pyav("ipod", "aac", x, 44100)
    assert data[4:8] == b"ftyp"
    assert_tone(decode_audio(data, DECODE_SR))


def test_decode_from_path_and_file_object(signal, tmp_path):
    data = encode_audio(signal, SR, "mp3")
    path = tmp_path / "speech.mp3"
    path.write_bytes(data)
    assert_tone(decode_audio(path, DECODE_SR))
    assert_tone(decode_audio(str(path), DECODE_SR))
    assert_tone(decode_audio(io.BytesIO(data), DECODE_SR))
    assert_tone(decode_audio(bytearray(data), DECODE_SR))


def test_decode_rate_is_respected(signal):
    data = encode_audio(signal, SR, "flac")
    assert len(decode_audio(data, 8000)) == int(DURATION * 8000)
    assert len(decode_audio(data, 48000)) == int(DURATION * 48000)
    np.testing.assert_allclose(decode_audio(data, SR), signal, atol=1e-4)


def test_stereo_is_downmixed_by_averaging():
    tone = np.sin(2 * np.pi * TONE * np.arange(int(SR * DURATION)) / SR).astype(np.float32)
    stereo = np.stack([0.6 * tone, 0.2 * tone], axis=1)  # (frames, channels)

    buf = io.BytesIO()
    sf.write(buf, stereo, SR, format="WAV", subtype="PCM_16")  # soundfile path
    y = decode_audio(buf.getvalue(), DECODE_SR)
    assert y.ndim == 1
    assert_tone(y)
    assert abs(np.abs(y).max() - 0.4) < 0.01

    data = _write_with_pyav("mp3", "libmp3lame", stereo, SR, layout="stereo")  # PyAV path
    y = decode_audio(data, DECODE_SR)
    assert y.ndim == 1
    assert_tone(y)
    assert abs(np.percentile(np.abs(y), 99.5) - 0.4) < 0.05


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_integer_pcm_is_scaled(subtype):
    x = 0.5 * np.sin(2 * np.pi * TONE * np.arange(SR) / SR)
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype=subtype)
    y = decode_audio(buf.getvalue(), SR)
    np.testing.assert_allclose(y, x, atol=1e-2 if subtype == "PCM_U8" else 1e-4)


def test_integer_pcm_is_scaled_on_the_pyav_path():
    # Sun AU is left to FFmpeg, whose pcm decoders hand out integer frames.
    x = 0.5 * np.sin(2 * np.pi * TONE * np.arange(SR) / SR)
    for subtype in ("PCM_16", "PCM_32"):
        buf = io.BytesIO()
        sf.write(buf, x, SR, format="AU", subtype=subtype)
        y = decode_audio(buf.getvalue(), SR)
        np.testing.assert_allclose(y, x, atol=1e-4)


def test_out_of_range_float_wav_is_clipped():
    x = 1.5 * np.sin(2 * np.pi * TONE * np.arange(SR) / SR)
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")
    y = decode_audio(buf.getvalue(), SR)
    assert np.abs(y).max() == pytest.approx(1.0)


# --------------------------------------------------------------------------- errors


def test_empty_input_is_invalid_audio(tmp_path):
    assert "empty" in assert_invalid_audio(b"").message
    assert_invalid_audio(io.BytesIO(b""))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert_invalid_audio(empty)


@pytest.mark.parametrize("seed", range(8))
def test_garbage_is_invalid_audio(seed):
    rng = np.random.default_rng(seed)
    assert_invalid_audio(rng.bytes(int(rng.integers(1, 50_000))))


@pytest.mark.parametrize(
    "data",
    [b"RIFF" + bytes(range(256)) * 4, b"OggS" + b"\x00" * 500, b"fLaC" + b"\xff" * 100, b"not audio at all " * 50],
)
def test_garbage_with_plausible_magic_is_invalid_audio(data):
    assert_invalid_audio(data)


def test_zero_sample_wav_is_invalid_audio():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(0, dtype=np.float32), SR, format="WAV", subtype="PCM_16")
    assert "no audio" in assert_invalid_audio(buf.getvalue()).message
    assert_invalid_audio(encode_audio(np.zeros(0, dtype=np.float32), SR, "wav"))


def test_truncated_file_keeps_what_decodes(signal):
    data = encode_audio(signal, SR, "mp3")
    y = decode_audio(data[: len(data) // 2], DECODE_SR)
    assert 0.5 < len(y) / DECODE_SR < 1.0


# --------------------------------------------------------------------------- resample


def test_resample_lengths_and_dtype(signal):
    half = resample(signal, SR, SR // 2)
    double = resample(signal, SR, SR * 2)
    assert half.dtype == np.float32 and double.dtype == np.float32
    assert len(half) == len(signal) // 2
    assert len(double) == len(signal) * 2
    assert abs(peak_hz(half, SR // 2) - TONE) < 3.0
    assert abs(peak_hz(double, SR * 2) - TONE) < 3.0


def test_resample_same_rate_is_noop(signal):
    same = resample(signal, SR, SR)
    np.testing.assert_array_equal(same, signal)
    assert same.dtype == np.float32
    assert resample(np.zeros(0, dtype=np.float32), SR, 16000).shape == (0,)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_decoded_length_is_capped(signal, fmt, monkeypatch):
    import services.core.audio.decode as audio

    data = encode_audio(signal, SR, fmt)
    monkeypatch.setattr(audio, "MAX_DECODE_SECONDS", 1)
    with pytest.raises(audio.AudioTooLong) as info:
        decode_audio(data)
    assert info.value.status_code == 400 and info.value.code == "audio_too_long" and info.value.param == "file"
    assert "longer" in info.value.message


def _flac_silence(seconds: float, rate: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), dtype=np.int16), rate, format="FLAC")
    return buffer.getvalue()


def test_max_seconds_stops_decoding_at_the_limit():
    import services.core.audio.decode as audio

    with pytest.raises(audio.AudioTooLong) as info:
        decode_audio(_flac_silence(600, 8000), 16000, max_seconds=30)
    assert "30 s" in info.value.message and info.value.param == "file"
    assert decode_audio(_flac_silence(20, 8000), 16000, max_seconds=30).size == 20 * 16000


@pytest.mark.parametrize("rate", [3999, 384_001])
def test_header_rates_outside_4_to_384_khz_are_refused(rate):
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(100, dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    data[24:28] = rate.to_bytes(4, "little")  # the fmt chunk's sample rate
    with pytest.raises(InvalidAudio) as info:
        decode_audio(bytes(data), param="reference")
    assert info.value.code == "invalid_sample_rate" and info.value.param == "reference"
