"""Subtitles with speakers as a user checks them: SRT (``A: text``) and WebVTT voice spans (``<v A>text</v>``) parsed
strictly by their cue grammar, and the cues' speakers and words checked against a meeting's turns
(tests/meetings.py)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from tests import meetings

STAMP = r"(\d\d):([0-5]\d):([0-5]\d)[.,](\d\d\d)"


@dataclass
class Cue:
    start: float
    end: float
    speaker: str
    text: str


def _seconds(groups: tuple[str, ...]) -> float:
    h, m, s, ms = (int(g) for g in groups)
    return h * 3600 + m * 60 + s + ms / 1000


def _timing(line: str, separator: str) -> tuple[float, float]:
    stamp = STAMP.replace("[.,]", re.escape(separator))
    m = re.fullmatch(rf"{stamp} --> {stamp}", line)
    assert m, f"not a cue timing line: {line!r}"
    start, end = _seconds(m.groups()[:4]), _seconds(m.groups()[4:])
    assert start < end, line
    return start, end


def parse_vtt(body: str) -> list[Cue]:
    """WebVTT as its grammar has it: the header, then blocks of a timing line and one payload line that is a
    voice span (``<v NAME>text</v>``) whose name and text hold no raw ``<``, ``>`` or ``&`` but entities."""
    assert body.startswith("WEBVTT\n\n"), body[:40]
    cues = []
    for block in body[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2, block
        start, end = _timing(lines[0], ".")
        m = re.fullmatch(r"<v ([^<>\n]+)>([^<>\n]*)</v>", lines[1])
        assert m, f"not a voice span: {lines[1]!r}"
        for part in m.groups():
            assert re.fullmatch(r"([^&]|&(amp|lt|gt);)*", part), f"a raw '&' in {part!r}"
        cues.append(Cue(start, end, html.unescape(m.group(1)), html.unescape(m.group(2))))
    return cues


def parse_srt(body: str) -> list[Cue]:
    """SubRip: blocks numbered from 1, a timing line, one text line ``SPEAKER: text``."""
    cues = []
    for number, block in enumerate(body.strip("\n").split("\n\n"), 1):
        lines = block.split("\n")
        assert len(lines) == 3 and lines[0] == str(number), block
        start, end = _timing(lines[1], ",")
        speaker, sep, text = lines[2].rpartition(": ")
        assert sep and speaker, lines[2]
        cues.append(Cue(start, end, speaker, text))
    return cues


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def labels_by_turn(cues: list[Cue], turns: list[meetings.Turn]) -> list[str]:
    """The speaker holding most of each turn's cue time."""
    found = []
    for _, start, end, _ in turns:
        time: dict[str, float] = {}
        for cue in cues:
            overlap = min(end, cue.end) - max(start, cue.start)
            if overlap > 0:
                time[cue.speaker] = time.get(cue.speaker, 0.0) + overlap
        found.append(max(time, key=time.__getitem__) if time else "")
    return found


def check_turns(cues: list[Cue], turns: list[meetings.Turn], expected: list[str] | None = None) -> None:
    labels = labels_by_turn(cues, turns)
    if expected is None:
        assert labels[0] == labels[2] and labels[1] == labels[3] and labels[0] != labels[1], cues
        assert {c.speaker for c in cues} == {"A", "B"}, cues
    else:
        assert labels == expected, cues
    for (_who, start, end, text), label in zip(turns, labels):  # each turn's words in its speaker's cues
        said = " ".join(c.text for c in cues if c.speaker == label and c.start < end and c.end > start)
        assert len(words(said) & words(text)) >= 0.7 * len(words(text)), (text, said)
