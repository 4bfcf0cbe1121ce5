"""bench/tts_kokoro.py: the kokoro-onnx peer is fed exactly the tokens `harmony serve`'s Kokoro synthesizes.
(kokoro-onnx itself is not needed: the bench imports it only when run.)"""

from __future__ import annotations

from bench import tts_kokoro
from services.core.contracts.wire import has_words
from services.tts.text import split_sentences
from tests import models


def test_the_phonemes_are_each_spoken_sentences_joined_by_a_space():
    assert tts_kokoro.peer_phonemes("Hello there. ... Bye now!", lambda s: f"<{s}>") == "<Hello there.> <Bye now!>"
    assert tts_kokoro.peer_phonemes("今日は。明日も。", str.upper) == "今日は。 明日も。"


def test_the_peer_gets_the_tokens_harmony_synthesizes_for_every_bench_text():
    kokoro = models.kokoro_ja()
    vocab = kokoro.vocab
    phonemize = tts_kokoro.front_end()
    for text in tts_kokoro.TEXTS:
        pieces = [kokoro.tokenize(s) for s in split_sentences(text) if has_words(s)]
        assert len(pieces) == 2 and all(len(p) == 1 for p in pieces), text  # two sentences, one run each
        ours = [*pieces[0][0], vocab[" "], *pieces[1][0]]
        phonemes = tts_kokoro.peer_phonemes(text, phonemize)
        # what kokoro-onnx 0.6.1 runs of them (Kokoro._prepare, Tokenizer.tokenize): whitespace collapsed to one
        # space, phonemes outside the vocabulary dropped; one window up to 510 phonemes (chunker.split_phonemes)
        peer = [vocab[p] for p in " ".join(phonemes.split()) if p in vocab]
        assert peer == ours and len(phonemes) <= 510, text
