"""Sentence splitting for streaming synthesis: audio can start as soon as the first sentence is ready."""

from __future__ import annotations

import re

ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig",
                 "inc", "ltd", "co", "mt", "approx", "dept", "est", "jan", "feb", "mar", "apr", "jun", "jul",
                 "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k"}
_END = re.compile(r"([.!?…]+[\"'”’)\]]*)(\s+)|([。！？]+[」』）]*)|(\n\s*\n)")
MAX_CHARS = 400


def split_sentences(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Split ``text`` into sentences; overlong ones are cut at commas, then at spaces."""
    text = text.strip()
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _END.finditer(text):
        end = match.end(1) if match.group(1) else match.end()
        candidate = text[start:end].strip()
        if match.group(1):
            last_word = candidate[: -len(match.group(1))].rsplit(None, 1)[-1].lower() if candidate[
                : -len(match.group(1))].strip() else ""
            if last_word.rstrip(".") in ABBREVIATIONS or re.fullmatch(r"[a-z]", last_word):
                continue  # "Dr. Smith", "J. R. R. Tolkien": not a sentence end
            if re.fullmatch(r"\d+", last_word) and match.group(1) == ".":
                continue  # "3. item", "version 2. something" - too ambiguous to split
        if candidate:
            sentences.append(candidate)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    out: list[str] = []
    for sentence in sentences:
        out.extend(_cut(sentence, max_chars))
    return out


def _cut(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[:max_chars]
        cut = max(window.rfind(", "), window.rfind("; "), window.rfind(": "), window.rfind("、"))
        if cut < max_chars // 3:
            cut = window.rfind(" ")
        if cut < max_chars // 3:
            cut = max_chars - 1
        pieces.append(rest[: cut + 1].strip())
        rest = rest[cut + 1:].strip()
    if rest:
        pieces.append(rest)
    return pieces
