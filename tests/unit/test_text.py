"""Sentence splitting for streamed synthesis."""

from services.tts.text import split_sentences


def test_splits_on_sentence_ends_and_keeps_the_punctuation():
    assert split_sentences("Hello there. How are you? I am fine!") == ["Hello there.", "How are you?", "I am fine!"]


def test_abbreviations_and_initials_do_not_end_a_sentence():
    text = "Dr. Smith met Mr. J. Jones at 5 p.m. today. They talked."
    assert split_sentences(text)[-1] == "They talked."
    assert split_sentences(text)[0].startswith("Dr. Smith met Mr. J. Jones")


def test_japanese_and_chinese_sentence_marks():
    assert split_sentences("今日は晴れです。明日は雨ですか？") == ["今日は晴れです。", "明日は雨ですか？"]


def test_quotes_stay_with_their_sentence():
    assert split_sentences('He said "stop." Then he left.') == ['He said "stop."', "Then he left."]


def test_overlong_sentence_is_cut_at_commas_then_spaces():
    sentence = ", ".join(["a clause with several words in it"] * 30) + "."
    pieces = split_sentences(sentence, max_chars=120)
    assert all(len(p) <= 120 for p in pieces)
    assert " ".join(pieces).replace(" ", "") == sentence.replace(" ", "")
    no_commas = " ".join(["word"] * 200)
    assert all(len(p) <= 120 for p in split_sentences(no_commas, max_chars=120))


def test_blank_input_gives_no_sentences():
    assert split_sentences("   \n ") == []


def test_paragraph_breaks_split():
    assert split_sentences("Title line\n\nBody text here") == ["Title line", "Body text here"]
