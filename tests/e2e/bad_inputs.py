"""A corpus of bad input for the public API: each case is one HTTP request that must be refused with a 4xx.

A case is ``(id, method, path, build, statuses)``: ``build()`` returns the keyword arguments of one
``httpx`` request (built lazily, so the large cases cost nothing until they run).
"""

from __future__ import annotations

import io
import struct
import wave
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import soundfile as sf

TINY_WAV_SECONDS = 0.5


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)


def encoded(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def pcm_wav(seconds: float = TINY_WAV_SECONDS, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((tone(seconds, rate) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def wav_header(rate: int, data_size: int, channels: int = 1, bits: int = 16) -> bytes:
    """A canonical 44-byte RIFF/WAVE header that claims whatever it is told to."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    riff_size = min(0xFFFFFFFF, 36 + data_size)
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size))


def junk(size: int, seed: int = 7) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


PNG = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 1, 1) + b"\x08\x02\x00\x00\x00"
       + b"\x90wS\xde" + b"\x00\x00\x00\x0cIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       + b"\x00\x00\x00\x00IEND\xaeB`\x82")
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("speech.wav", pcm_wav())
    return buffer.getvalue()


def upload(path: str, data: bytes, filename: str = "audio.wav", **fields: Any) -> dict[str, Any]:
    """Multipart kwargs for ``path``: the audio as ``file`` (a ``name`` for voice registration)."""
    base = {"/v1/audio/transcriptions": {"model": "whisper-1"}, "/v1/audio/translations": {"model": "whisper-1"},
            "/v1/audio/voices": {"name": "corpus"}}.get(path, {})
    return {"files": {"file": (filename, data, "application/octet-stream")}, "data": {**base, **fields}}


def speech(**fields: Any) -> dict[str, Any]:
    return {"json": {"model": "tts-1", "voice": "alloy", "input": "Hello.", **fields}}


def raw_json(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


Case = tuple[str, str, str, Callable[[], dict[str, Any]], tuple[int, ...]]
STT = "/v1/audio/transcriptions"
BAD = (400,)

NON_ASCII_NUMBERS = {"arabic-indic": "١٫٥", "fullwidth": "１.５", "devanagari": "१", "thai": "๑"}


def _audio_cases() -> list[Case]:
    wav = pcm_wav()
    return [
        ("stt-empty-file", "POST", STT, lambda: upload(STT, b""), BAD),
        ("translate-empty-file", "POST", "/v1/audio/translations", lambda: upload("/v1/audio/translations", b""), BAD),
        ("vad-empty-file", "POST", "/v1/audio/vad", lambda: upload("/v1/audio/vad", b""), BAD),
        ("embed-empty-file", "POST", "/v1/audio/embeddings", lambda: upload("/v1/audio/embeddings", b""), BAD),
        ("voice-empty-file", "POST", "/v1/audio/voices", lambda: upload("/v1/audio/voices", b""), BAD),
        ("stt-truncated-header", "POST", STT, lambda: upload(STT, wav[:20]), BAD),
        ("stt-header-only", "POST", STT, lambda: upload(STT, wav[:44]), BAD),
        ("stt-wav-1hz-rate", "POST", STT, lambda: upload(STT, wav_header(1, 16000) + wav[44:16044]), BAD),
        ("stt-wav-0-channels", "POST", STT, lambda: upload(STT, wav_header(16000, 3200, channels=0) + wav[44:3244]),
         BAD),
        ("stt-mp3-header-then-junk", "POST", STT,
         lambda: upload(STT, b"ID3\x03\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + junk(4000), "a.mp3"), BAD),
        ("stt-random-bytes-as-flac", "POST", STT, lambda: upload(STT, junk(8000), "a.flac"), BAD),
        ("stt-png-as-wav", "POST", STT, lambda: upload(STT, PNG), BAD),
        ("stt-pdf-as-wav", "POST", STT, lambda: upload(STT, PDF), BAD),
        ("stt-zip-as-wav", "POST", STT, lambda: upload(STT, zip_bytes()), BAD),
        ("stt-text-as-wav", "POST", STT, lambda: upload(STT, b"Hello, this is text.\n" * 50), BAD),
        ("vad-png-as-wav", "POST", "/v1/audio/vad", lambda: upload("/v1/audio/vad", PNG), BAD),
        ("embed-pdf-as-wav", "POST", "/v1/audio/embeddings", lambda: upload("/v1/audio/embeddings", PDF), BAD),
        ("voice-zip-as-wav", "POST", "/v1/audio/voices", lambda: upload("/v1/audio/voices", zip_bytes()), BAD),
        ("convert-text-as-wav", "POST", "/v1/audio/conversions",
         lambda: {**upload("/v1/audio/conversions", b"not audio at all"),
                  "files": [("file", ("a.wav", b"not audio", "audio/wav")),
                            ("reference", ("r.wav", PDF, "audio/wav"))]},
         BAD),
        ("stt-declares-over-upload-limit", "POST", STT, lambda: {"declared_length": 26 * 1024 * 1024}, (413,)),
        ("voice-declares-over-upload-limit", "POST", "/v1/audio/voices", lambda: {"declared_length": 2**40}, (413,)),
        ("stt-traversal-filename-junk", "POST", STT, lambda: upload(STT, junk(2000), "../../etc/passwd"), BAD),
    ]


def _voice_id_cases() -> list[Case]:
    voices = "/v1/audio/voices/"
    ids = {"traversal": "..%2F..%2Fetc%2Fpasswd", "voice-prefixed-dots": "voice_%2E%2E",
           "voice-prefixed-backslash": "voice_..%5C..%5Cetc%5Cpasswd", "nul": "voice_%00"}
    cases: list[Case] = []
    for name, voice_id in ids.items():
        cases.append((f"get-voice-{name}", "GET", voices + voice_id, lambda: {}, (404,)))
        cases.append((f"delete-voice-{name}", "DELETE", voices + voice_id, lambda: {}, (404,)))
    cases.append(("voice-name-traversal", "POST", "/v1/audio/voices",
                  lambda: upload("/v1/audio/voices", junk(3000), name="../../etc/passwd"), BAD))
    cases.append(("voice-name-too-long", "POST", "/v1/audio/voices",
                  lambda: upload("/v1/audio/voices", pcm_wav(), name="x" * 129), BAD))
    cases.append(("voice-name-missing", "POST", "/v1/audio/voices",
                  lambda: {"files": {"file": ("a.wav", pcm_wav(), "audio/wav")}}, BAD))
    return cases


def _text_cases() -> list[Case]:
    speech_path = "/v1/audio/speech"
    inputs = {"4097-characters": "a" * 4097, "4097-emoji": "\U0001F600" * 4097,
              "zero-width-only": "\u200b\u200c\u200d\ufeff" * 8,
              "rtl-marks-only": "\u200f\u202e\u200e" * 8, "nul-only": "\x00" * 16, "empty": ""}
    cases: list[Case] = [(f"speech-input-{name}", "POST", speech_path, lambda text=text: speech(input=text), BAD)
                         for name, text in inputs.items()]
    cases += [
        ("speech-lone-surrogate", "POST", speech_path,
         lambda: raw_json('{"model": "tts-1", "voice": "alloy", "input": "Hi \\ud800 there"}'), BAD),
        ("speech-lone-low-surrogate-voice", "POST", speech_path,
         lambda: raw_json('{"model": "tts-1", "voice": "\\udc00", "input": "Hi"}'), BAD),
        ("speech-body-array", "POST", speech_path, lambda: raw_json('["tts-1", "alloy", "Hi"]'), BAD),
        ("speech-body-string", "POST", speech_path, lambda: raw_json('"Hello"'), BAD),
        ("speech-body-null", "POST", speech_path, lambda: raw_json("null"), BAD),
        ("speech-body-deeply-nested", "POST", speech_path, lambda: raw_json("[" * 100_000 + "]" * 100_000), BAD),
        ("speech-body-nested-input", "POST", speech_path, lambda: speech(input={"a": [{"b": [1] * 3}]}), BAD),
        ("speech-body-not-json", "POST", speech_path, lambda: raw_json("{model: tts-1"), BAD),
        ("speech-body-invalid-utf8", "POST", speech_path,
         lambda: {"content": b'{"input": "\xff\xfe"}', "headers": {"content-type": "application/json"}}, BAD),
        ("speech-missing-input", "POST", speech_path, lambda: {"json": {"model": "tts-1", "voice": "alloy"}}, BAD),
        ("speech-missing-voice", "POST", speech_path, lambda: {"json": {"model": "tts-1", "input": "Hi"}}, BAD),
        ("speech-missing-model", "POST", speech_path, lambda: {"json": {"voice": "alloy", "input": "Hi"}}, BAD),
        ("speech-traversal-voice", "POST", speech_path, lambda: speech(voice="../../etc/passwd"), BAD),
        ("speech-traversal-registered-voice", "POST", speech_path, lambda: speech(voice="voice_../../etc/passwd"),
         (400, 404)),
        ("speech-unknown-format", "POST", speech_path, lambda: speech(response_format="exe"), BAD),
        ("speech-bad-reference-audio", "POST", speech_path, lambda: speech(reference_audio="!!not base64!!"), BAD),
        ("speech-unknown-model", "POST", speech_path, lambda: speech(model="../../etc/passwd"), (404,)),
    ]
    return cases


def _content_type_cases() -> list[Case]:
    return [
        ("stt-json-body", "POST", STT, lambda: {"json": {"model": "whisper-1", "file": "audio.wav"}}, BAD),
        ("stt-no-content-type", "POST", STT, lambda: {"content": pcm_wav()}, BAD),
        ("stt-multipart-no-boundary", "POST", STT,
         lambda: {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, BAD),
        ("stt-file-as-text-field", "POST", STT, lambda: {"data": {"model": "whisper-1", "file": "hello"}}, BAD),
        ("stt-missing-file", "POST", STT, lambda: {"data": {"model": "whisper-1"}, "files": {"x": ("x", b"x")}}, BAD),
        ("vad-xml-body", "POST", "/v1/audio/vad",
         lambda: {"content": b"<audio/>", "headers": {"content-type": "application/xml"}}, BAD),
        ("speech-multipart-body", "POST", "/v1/audio/speech",
         lambda: {"data": {"model": "tts-1", "voice": "alloy", "input": "Hi"}, "files": {"f": ("f", b"x")}}, BAD),
        ("speech-text-plain-body", "POST", "/v1/audio/speech",
         lambda: {"content": b"Hello", "headers": {"content-type": "text/plain"}}, BAD),
        ("embed-missing-file", "POST", "/v1/audio/embeddings", lambda: {"data": {"x": "1"}, "files": {"y": ("y", b"")}},
         BAD),
        ("convert-missing-target", "POST", "/v1/audio/conversions",
         lambda: {"files": {"file": ("a.wav", pcm_wav(), "audio/wav")}}, BAD),
        ("stt-bad-response-format", "POST", STT, lambda: upload(STT, pcm_wav(), response_format="docx"), BAD),
        ("stt-unknown-model", "POST", STT, lambda: upload(STT, pcm_wav(), model="../../etc/passwd"), (404,)),
        ("stt-bad-granularity", "POST", STT,
         lambda: upload(STT, pcm_wav(), response_format="verbose_json", **{"timestamp_granularities[]": "char"}), BAD),
    ]


def _number_cases() -> list[Case]:
    cases: list[Case] = []
    for script, digits in NON_ASCII_NUMBERS.items():
        cases += [
            (f"speech-speed-{script}", "POST", "/v1/audio/speech", lambda d=digits: speech(speed=d), BAD),
            (f"speech-sample-rate-{script}", "POST", "/v1/audio/speech", lambda d=digits: speech(sample_rate=d), BAD),
            (f"stt-temperature-{script}", "POST", STT, lambda d=digits: upload(STT, pcm_wav(), temperature=d), BAD),
            (f"vad-threshold-{script}", "POST", "/v1/audio/vad",
             lambda d=digits: upload("/v1/audio/vad", pcm_wav(), threshold=d), BAD),
        ]
    cases += [
        ("vad-min-speech-fullwidth", "POST", "/v1/audio/vad",
         lambda: upload("/v1/audio/vad", pcm_wav(), min_speech_duration_ms="２５０"), BAD),
        ("vad-speech-pad-arabic", "POST", "/v1/audio/vad",
         lambda: upload("/v1/audio/vad", pcm_wav(), speech_pad_ms="٣٠"), BAD),
        ("vad-min-silence-nan", "POST", "/v1/audio/vad",
         lambda: upload("/v1/audio/vad", pcm_wav(), min_silence_duration_ms="NaN"), BAD),
        ("speech-speed-infinity", "POST", "/v1/audio/speech", lambda: raw_json(
            '{"model": "tts-1", "voice": "alloy", "input": "Hi", "speed": Infinity}'), BAD),
        ("convert-sample-rate-fullwidth", "POST", "/v1/audio/conversions",
         lambda: {"files": [("file", ("a.wav", pcm_wav(), "audio/wav")),
                            ("reference", ("r.wav", pcm_wav(), "audio/wav"))],
                  "data": {"sample_rate": "４８０００"}}, BAD),
    ]
    return cases


CASES: list[Case] = _audio_cases() + _voice_id_cases() + _text_cases() + _content_type_cases() + _number_cases()


def _odd_audio() -> dict[str, tuple[bytes, str, float]]:
    """Valid audio in odd codecs, rates and layouts: (data, filename, seconds)."""
    return {
        "wav-8khz-mulaw": (encoded(tone(1.0, 8000), 8000, "WAV", "ULAW"), "a.wav", 1.0),
        "wav-96khz-float": (encoded(tone(1.0, 96000), 96000, "WAV", "FLOAT"), "a.wav", 1.0),
        "wav-6-channels": (encoded(tone(1.0, 16000, channels=6), 16000, "WAV", "PCM_16"), "a.wav", 1.0),
        "ogg-opus-48khz": (encoded(tone(1.0, 48000), 48000, "OGG", "OPUS"), "a.ogg", 1.0),
        "flac-24bit": (encoded(tone(1.0, 44100), 44100, "FLAC", "PCM_24"), "a.flac", 1.0),
        "wav-one-sample": (encoded(tone(1.0, 16000)[:1], 16000, "WAV", "PCM_16"), "a.wav", 0.0),
        "wav-claims-4gb": (wav_header(16000, 0xFFFFFFF0) + pcm_wav(0.5)[44:], "a.wav", 0.5),
        "traversal-filename": (pcm_wav(1.0), "../../etc/passwd", 1.0),
    }


ODD_AUDIO = _odd_audio()
