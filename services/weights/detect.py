"""What a model repository is, from its file list: the task and backend to serve it with, and what to put in
its spec. Pure: it is given the repository's files (relative paths) and a way to read a small file, and does
no I/O of its own, so it runs on a listing of the Hub before anything is downloaded, or on a local directory.

The families (docs/models.md):

- CTranslate2 Whisper (Systran/faster-whisper-*, distil-whisper and turbo conversions): ``model.bin`` and
  ``config.json`` (CTranslate2's Whisper config: ``alignment_heads``, ``lang_ids``...), or with
  ``tokenizer.json`` and ``vocabulary.txt``/``.json`` -> stt / faster-whisper.
- Piper voices (rhasspy/piper-voices, a voice's own repository): ``<voice>.onnx`` with ``<voice>.onnx.json``
  (a Piper config: ``audio``, ``espeak``, ``phoneme_id_map``) -> tts / piper, ``options.voice`` and the voice's
  languages; a repository of many voices needs the voice's name (``rhasspy/piper-voices:en_US-lessac-medium``).
- Kokoro v1.0 ONNX (onnx-community/Kokoro-82M-v1.0-ONNX, kokoro-onnx's ``kokoro-v1.0.onnx`` with
  ``voices-v1.0.bin``) -> tts / kokoro, Japanese voices; hexgrad/Kokoro-82M (PyTorch) is refused.
- ``silero_vad.onnx`` anywhere (snakers4/silero-vad) -> vad / silero.
- Resemblyzer's ``pretrained.pt`` -> embed / resemblyzer.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch

from services.core.runtime.weights import WeightsError

Reader = Callable[[str], "bytes | None"]

PIPER_VOICE_NAME = re.compile(r"^(?P<lang>[a-z]{2,3})_(?P<region>[A-Z]{2})-(?P<name>[A-Za-z0-9_]+)-"
                              r"(?P<quality>x_low|low|medium|high)$")
WHISPER_CONFIG_KEYS = {"alignment_heads", "lang_ids", "suppress_ids", "suppress_ids_begin"}
PIPER_CONFIG_KEYS = {"audio", "espeak", "phoneme_id_map"}
KOKORO_MODELS = ("kokoro-v1.0.onnx", "kokoro-v1.0.int8.onnx", "kokoro-v1.0.fp16.onnx", "onnx/model.onnx",
                 "onnx/model_quantized.onnx", "onnx/model_fp16.onnx")
KOKORO_ONNX_REPO = "onnx-community/Kokoro-82M-v1.0-ONNX"
# Kokoro v1.0 voices whose language this repository's Kokoro front end reads (Japanese: jf_*, jm_*)
KOKORO_READABLE = re.compile(r"^j[fm]_")
LISTED = 20  # names quoted in an error at most


class DetectError(WeightsError):
    """The files do not say what the model is (or say it is one this engine cannot serve)."""

    default_code = "model_not_recognized"


@dataclass(frozen=True)
class Detected:
    """What to serve a repository as: the spec's task, backend, options, voices and languages, and the files of
    the repository the backend needs (exact paths: a subset when the repository holds more, e.g. one voice)."""

    task: str
    backend: str
    options: dict[str, str] = field(default_factory=dict)
    voices: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def spec_fields(self) -> dict:
        """The fields of a SpeechModel spec this detection fills (task, backend and what else it found)."""
        out: dict = {"task": self.task, "backend": self.backend}
        if self.options:
            out["options"] = dict(self.options)
        if self.voices:
            out["voices"] = list(self.voices)
        if self.languages:
            out["languages"] = list(self.languages)
        return out


def piper_voice_files(voice: str) -> list[str]:
    """Glob patterns (fnmatch, ``*`` crosses ``/``) of one voice's files in rhasspy/piper-voices, whose voices sit
    at ``<lang>/<lang>_<REGION>/<name>/<quality>/<voice>.onnx``; ``voice`` is ``lang_REGION-name-quality``."""
    if not PIPER_VOICE_NAME.match(voice):
        raise DetectError(f"'{voice}' is not a Piper voice name such as en_US-lessac-medium "
                          "(language_REGION-name-quality, quality x_low, low, medium or high)")
    return [f"*/{voice}.onnx", f"*/{voice}.onnx.json"]


def detect(repo: str, files: Iterable[str], read: Reader, voice: str | None = None) -> Detected:
    """Task, backend and spec fields for repository ``repo`` (a name, for messages) whose files are ``files``
    (relative paths, ``/``-separated); ``read(path)`` gives a small file's bytes, or None when it cannot.
    ``voice`` picks a voice of a repository of many (Piper) or a voice to serve (Kokoro)."""
    paths = sorted({p.strip("/") for p in files if p and not p.endswith("/")})
    for attempt in (_whisper, _piper, _silero, _kokoro, _resemblyzer):
        found = attempt(repo, paths, read, voice)
        if found is not None:
            if voice is not None and found.task != "tts":
                raise DetectError(f"{repo} is a {found.backend} model ({found.task}): it has no voices, so "
                                  f"':{voice}' means nothing for it")
            return found
    _refuse_known(repo, paths, read)
    raise DetectError(
        f"cannot tell what model {repo} is: it has no model.bin with config.json (CTranslate2 Whisper), no *.onnx "
        "with its .onnx.json (Piper), no Kokoro ONNX model with voices, no silero_vad.onnx (Silero VAD), no "
        "Resemblyzer pretrained.pt; set task and backend in a config file")


# ---------------------------------------------------------------------------------------------------------- families

def _whisper(repo: str, paths: list[str], read: Reader, voice: str | None) -> Detected | None:
    if "model.bin" not in paths or "config.json" not in paths:
        return None
    config = _json(read, "config.json")
    tokenizer = "tokenizer.json" in paths
    vocabulary = [p for p in ("vocabulary.txt", "vocabulary.json") if p in paths]
    whisperish = isinstance(config, dict) and bool(WHISPER_CONFIG_KEYS & set(config))
    if isinstance(config, dict) and not whisperish:
        raise DetectError(f"{repo} is a CTranslate2 model but not a Whisper one (its config.json has none of "
                          f"{', '.join(sorted(WHISPER_CONFIG_KEYS))}); set task and backend in a config file")
    if not (tokenizer and vocabulary):
        if not whisperish:
            return None
        missing = [n for n, ok in (("tokenizer.json", tokenizer), ("vocabulary.txt or vocabulary.json", vocabulary))
                   if not ok]
        raise DetectError(f"{repo} is a CTranslate2 Whisper model without {' and '.join(missing)}, which "
                          "faster-whisper needs offline")
    needed = ["model.bin", "config.json", "tokenizer.json", vocabulary[0]]
    if "preprocessor_config.json" in paths:  # large-v3's 128 mel bins
        needed.append("preprocessor_config.json")
    return Detected("stt", "faster-whisper", files=needed)


def _piper(repo: str, paths: list[str], read: Reader, voice: str | None) -> Detected | None:
    present = set(paths)
    voices = {posixpath.basename(p)[: -len(".onnx")]: p for p in paths
              if p.endswith(".onnx") and p + ".json" in present}
    if not voices:
        return None
    if voice is None and len(voices) > 1:
        raise DetectError(f"{repo} holds {len(voices)} Piper voices: name one, e.g. {repo}:{sorted(voices)[0]} "
                          f"(voices: {_listing(voices)})")
    name = voice if voice is not None else next(iter(voices))
    if name not in voices:
        raise DetectError(f"{repo} has no Piper voice '{name}'; it has {_listing(voices)}")
    model = voices[name]
    config = _json(read, model + ".json")
    if isinstance(config, dict) and not PIPER_CONFIG_KEYS & set(config):
        raise DetectError(f"{repo}: {model}.json is not a Piper voice config (none of "
                          f"{', '.join(sorted(PIPER_CONFIG_KEYS))}); set task and backend in a config file")
    languages = piper_config_languages(config) if isinstance(config, dict) else []
    named = PIPER_VOICE_NAME.match(name)
    if not languages and named:
        languages = [named.group("lang")]
    return Detected("tts", "piper", options={"voice": name}, languages=languages, files=[model, model + ".json"])


def piper_config_languages(config: dict) -> list[str]:
    """ISO 639 codes of a voice from its ``.onnx.json``: ``language.family`` or ``language.code``
    (``en_US`` -> ``en``), else ``espeak.voice`` (``en-us`` -> ``en``, ``cmn`` -> ``cmn``)."""
    language = config.get("language") or {}
    espeak = (config.get("espeak") or {}).get("voice") or ""
    for value in (language.get("family"), str(language.get("code") or "").split("_")[0], espeak.split("-")[0]):
        code = str(value or "").strip().lower()
        if re.fullmatch(r"[a-z]{2,3}", code):
            return [code]
    return []


def _silero(repo: str, paths: list[str], read: Reader, voice: str | None) -> Detected | None:
    found = sorted((p for p in paths if posixpath.basename(p) == "silero_vad.onnx"), key=lambda p: (p.count("/"), p))
    if not found:
        return None
    return Detected("vad", "silero", files=[found[0]])


def _kokoro(repo: str, paths: list[str], read: Reader, voice: str | None) -> Detected | None:
    models = [p for p in KOKORO_MODELS if p in paths]
    archives = [p for p in paths if "/" not in p and (p.endswith(".npz") or re.fullmatch(r"voices.*\.bin", p))]
    packs = {posixpath.basename(p)[:-4]: p for p in paths if re.fullmatch(r"voices/[^/]+\.bin", p)}
    if not models or not (archives or packs):
        return None
    vocab = [p for p in ("vocab.json", "config.json", "tokenizer.json") if p in paths]
    if archives:  # kokoro-onnx's voices-v1.0.bin: an npz whose names are read when it loads
        if voice is not None and not KOKORO_READABLE.match(voice):
            raise DetectError(_kokoro_language_error(repo, [voice]))
        return Detected("tts", "kokoro", options={"model_file": models[0], "voices_file": archives[0]},
                        voices=[voice] if voice else [], languages=["ja"], files=[models[0], archives[0], *vocab])
    if voice is not None:
        if voice not in packs:
            raise DetectError(f"{repo} has no Kokoro voice '{voice}'; it has {_listing(packs)}")
        chosen = [voice]
    else:
        chosen = sorted(v for v in packs if KOKORO_READABLE.match(v))
    unreadable = [v for v in chosen if not KOKORO_READABLE.match(v)]
    if unreadable or not chosen:
        raise DetectError(_kokoro_language_error(repo, unreadable or sorted(packs)))
    return Detected("tts", "kokoro", options={"model_file": models[0]}, voices=chosen, languages=["ja"],
                    files=[models[0], *(packs[v] for v in chosen), *vocab])


def _kokoro_language_error(repo: str, voices: list[str]) -> str:
    return (f"{repo}: Kokoro voices {', '.join(voices[:LISTED])} are not Japanese, and the Kokoro backend's text "
            "front end reads Japanese only (jf_*, jm_*); English needs misaki's English G2P, which is not installed")


def _resemblyzer(repo: str, paths: list[str], read: Reader, voice: str | None) -> Detected | None:
    found = sorted((p for p in paths if posixpath.basename(p) == "pretrained.pt"), key=lambda p: (p.count("/"), p))
    if not found:
        return None
    if "resemblyzer" not in repo.lower() and not any(
            "resemblyzer" in p.lower() or posixpath.basename(p) == "voice_encoder.py" for p in paths):
        return None  # a pretrained.pt of some other model
    return Detected("embed", "resemblyzer", files=[found[0]])


def _refuse_known(repo: str, paths: list[str], read: Reader) -> None:
    """Repositories recognised but not servable: say what to use instead."""
    if any(fnmatch(p, "kokoro*.pth") for p in paths) or any(fnmatch(p, "voices/*.pt") for p in paths):
        raise DetectError(f"{repo} holds Kokoro's PyTorch weights (.pth, voices/*.pt), which the kokoro backend "
                          f"cannot run: use the ONNX export, {KOKORO_ONNX_REPO}")
    kokoro_onnx = [p for p in paths if p.endswith(".onnx") and ("kokoro" in repo.lower()
                                                                or posixpath.basename(p).startswith("kokoro"))]
    if kokoro_onnx and not any(p.startswith("voices") or p.endswith(".npz") for p in paths):
        raise DetectError(f"{repo} has a Kokoro ONNX model ({kokoro_onnx[0]}) but no voices (voices-v1.0.bin, *.npz "
                          "or voices/*.bin)")
    config = _json(read, "config.json") if "config.json" in paths else None
    if isinstance(config, dict) and config.get("model_type") == "whisper":
        raise DetectError(f"{repo} is a Transformers Whisper checkpoint: faster-whisper needs a CTranslate2 "
                          "conversion (e.g. Systran/faster-whisper-*, or ct2-transformers-converter)")


def _json(read: Reader, path: str):
    try:
        data = read(path)
    except OSError:
        return None
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _listing(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
