"""libespeak-ng (from the espeakng-loader wheel) through ctypes: every language espeak-ng speaks.

libespeak-ng keeps global state, so one process-wide engine serialises calls with a lock.

espeak-ng varies its speech at random (its generator is seeded from the clock when it
starts): the same text gives slightly different audio each time. ``synthesize(...,
seed=N)`` reseeds it first, so that call's audio is always the same.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0
RATE_PARAM = 1  # espeakRATE, words per minute
PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: phonemes as IPA (UTF-8)

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class EspeakEngine:
    _instance: EspeakEngine | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_ng_SetRandSeed.restype = None
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        data = espeakng_loader.get_data_path()
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(Path(data).parent).encode(), 0)
        if rate <= 0:
            raise RuntimeError("libespeak-ng failed to initialise")
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> EspeakEngine:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = EspeakEngine()
            return cls._instance

    def _on_audio(self, wav, count, _events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.float32) / 32768.0)
        return 0

    def voices(self) -> list[tuple[str, str]]:
        """(identifier, language) of every voice espeak-ng has."""
        out = []
        array = self.lib.espeak_ListVoices(None)
        index = 0
        while array[index]:
            voice = array[index].contents
            languages = voice.languages or b""
            language = languages[1:].split(b"\0")[0].decode(errors="replace") if languages else ""
            out.append(((voice.identifier or b"").decode(), language))
            index += 1
        return out

    def phonemes(self, text: str, voice: str) -> list[str]:
        """espeak-ng's phonemes of ``text`` in ``voice``, one string (IPA) per clause; nothing is synthesized."""
        buffer = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        clauses: list[str] = []
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                raise ValueError(f"espeak-ng has no voice '{voice}'")
            while pointer.value:
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(pointer), ESPEAK_CHARS_UTF8, PHONEMES_IPA)
                if out:
                    clauses.append(out.decode("utf-8", errors="replace"))
        return clauses

    def synthesize(self, text: str, voice: str, words_per_minute: int = 175, seed: int | None = None) -> np.ndarray:
        """Speech for ``text``; with a ``seed``, the same audio on every call (else espeak-ng's own randomness)."""
        data = text.encode("utf-8") + b"\0"
        with self.lock:
            if seed is not None:
                self.lib.espeak_ng_SetRandSeed(int(seed))
            if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                raise ValueError(f"espeak-ng has no voice '{voice}'")
            self.lib.espeak_SetParameter(RATE_PARAM, int(words_per_minute), 0)
            self._chunks = []
            buffer = ctypes.create_string_buffer(data)
            result = self.lib.espeak_Synth(buffer, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
            if result != EE_OK:
                raise RuntimeError(f"espeak_Synth failed with code {result}")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
