"""Kokoro-82M Japanese voices: real synthesis, checked by ear with Whisper base."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.errors import InvalidRequest
from services.core.tasks.jobs import SynthJob
from services.tts.backends.kokoro import MAX_TOKENS, KokoroBackend, split_tokens
from tests import models
from tests.speech import cer

TEXT = "今日はとても良い天気ですね。"
VOICE = "jf_alpha"
SR = 24000


@pytest.fixture(scope="module")
def kokoro() -> KokoroBackend:
    return models.kokoro_ja()


@pytest.fixture(scope="module")
def whisper():
    return models.whisper_base()


@pytest.fixture(scope="module")
def speech(kokoro) -> np.ndarray:
    return kokoro.run_batch([SynthJob(TEXT, VOICE, "ja", 1.0)])[0]


def test_voices_are_the_japanese_voice_packs(kokoro):
    voices = kokoro.voices()
    assert {v.backend_voice for v in voices} == {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}
    alpha = next(v for v in voices if v.backend_voice == "jf_alpha")
    assert alpha.id == "kokoro-jf_alpha" and alpha.name == "jf_alpha"
    assert alpha.model == "kokoro-ja" and alpha.backend == "kokoro"
    assert alpha.languages == ["ja"] and alpha.sample_rate == SR and alpha.neural
    assert kokoro.sample_rate == SR


def test_japanese_speech_is_heard_right(speech, whisper):
    from services.core.tasks.jobs import ChunkJob

    assert speech.dtype == np.float32 and speech.ndim == 1
    assert 1.0 <= len(speech) / SR <= 5.0
    assert float(np.sqrt(np.mean(speech ** 2))) > 0.02
    assert float(np.max(np.abs(speech))) <= 1.0
    result = whisper.run_batch([ChunkJob(audio=resample(speech, SR, 16000), offset=0.0, language="ja")])[0]
    heard = "".join(s.text for s in result.segments)
    assert cer(TEXT, heard) <= 0.35, heard


def test_speed_two_is_clearly_shorter(kokoro, speech):
    fast = kokoro.run_batch([SynthJob(TEXT, VOICE, "ja", 2.0)])[0]
    assert 0.3 * len(speech) < len(fast) < 0.75 * len(speech)


def test_a_batch_returns_one_clip_per_job_in_order(kokoro):
    short, longer = kokoro.run_batch([SynthJob("はい。", "jm_kumo", "ja", 1.0),
                                      SynthJob("東京駅まで何分かかりますか？", "jf_nezumi", "ja", 1.0)])
    assert 0 < len(short) < len(longer)


def test_numbers_are_read_with_their_counters(kokoro):
    # 15日 is ジューゴニチ (not ジューゴ + ビ), 1,234円 one number (not イチ, ニヒャク...)
    assert "ʥɨːɡo ɲiʨi" in kokoro.phonemize("3月15日")
    assert kokoro.phonemize("1,234円") == "seɴ ɲi çakɯ saɲʥɨːjo eɴ"


def test_unknown_voice_is_refused(kokoro):
    with pytest.raises(InvalidRequest):
        kokoro.run_batch([SynthJob(TEXT, "af_heart", "ja", 1.0)])


def test_long_sentences_are_split_not_truncated(kokoro):
    clause = "東京駅から新大阪駅まで新幹線に乗って、"
    text = clause * 30 + "帰りました。"
    pieces = kokoro.tokenize(text)
    assert len(pieces) > 1 and all(0 < len(p) <= MAX_TOKENS for p in pieces)
    whole = [kokoro.vocab[c] for c in kokoro.phonemize(text) if c in kokoro.vocab]
    space = kokoro.vocab[" "]
    assert [t for p in pieces for t in p if t != space] == [t for t in whole if t != space]
    comma = kokoro.vocab[","]
    assert all(p[-1] == comma for p in pieces[:-1])  # cut after clause punctuation


def test_split_tokens_falls_back_to_word_gaps_then_hard_cuts():
    space, stop = 16, 4
    words = ([43] * 9 + [space]) * 120  # 1200 tokens, no punctuation
    pieces = split_tokens(words, {stop}, space)
    assert all(len(p) <= MAX_TOKENS and p[-1] != space and p[0] != space for p in pieces)
    assert sum(len(p) for p in pieces) + (len(pieces) - 1) == len(words) - 1
    solid = [43] * 1100
    assert [len(p) for p in split_tokens(solid, {stop}, space)] == [510, 510, 80]
    assert split_tokens([], {stop}, space) == []
