"""Diarization quality: who spoke when, on meetings of 2, 3 and 4 of the engine's own voices.

    python -m bench.diarization [--meetings 3] [--speakers 2,3,4] [--seed 1] [--thresholds 0.65,0.85,0.9] [--json]
    python -m bench.diarization --url http://127.0.0.1:8000   # a running engine instead of a new `harmony serve`
    python -m bench.diarization --config my-serve.yaml        # `harmony serve` with another config (another route)
    python -m bench.diarization --config both.yaml --naming-models gpt-4o-transcribe-diarize,diarize-named

Each meeting (bench/diarization_meetings.py) has turns of 1-15 s of known text, pauses of 0.1-1 s and a quarter of
the turns overlapping the previous one by 0.2-0.5 s, all from the seed. Every meeting goes to
``POST /v1/audio/transcriptions`` (``gpt-4o-transcribe-diarize``, ``diarized_json``) once plainly, scored for:

- the diarization error rate (pyannote.metrics, collar 0.25 s; missed speech, false alarm and confusion);
- the speaker count: the number of distinct speakers in the answer equals the meeting's.

and once more per ``speaker_similarity_threshold`` (the engine's default first) with ``known_speaker_references[]``
of all the meeting's speakers but one (2-10 s of each, saying lines no meeting says) and of one voice that is not in
the meeting, scored for:

- known speakers named right: the share of the known speakers' reference time labelled with their name;
- false matches: the share of meetings in which the absent voice's name labels anything.

``--naming-models`` runs the naming passes with each of several routes on the same meetings (the plain pass with the
first), reporting for each also the DER of its named answers: routes that cluster alike have the same.

Beside them, a baseline that gives all the reference's speech to one speaker. Targets (issue 24): DER at most 15 %
on 2-3 speakers, the count right in at least 80 % of meetings, known speakers named right at least 90 %.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from openai.types.audio import TranscriptionDiarized
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from bench.diarization_meetings import RATE, Meeting, Speech, make_meeting, uem
from tests.harmony_process import HarmonyProcess
from tests.speech import wav_bytes

MODEL = "gpt-4o-transcribe-diarize"
COLLAR = 0.25
TARGETS = {"der": 0.15, "count": 0.80, "named": 0.90}


def hypothesis(answer: TranscriptionDiarized) -> Annotation:
    """The engine's answer as a pyannote annotation: one segment per answered segment, labelled with its speaker."""
    found = Annotation()
    for i, segment in enumerate(answer.segments):
        if segment.end > segment.start:
            found[Segment(segment.start, segment.end), i] = segment.speaker
    return found


def one_speaker(reference: Annotation) -> Annotation:
    """The baseline: all the reference's speech (its support) given to one speaker."""
    baseline = Annotation()
    for i, segment in enumerate(reference.get_timeline().support()):
        baseline[segment, i] = "everyone"
    return baseline


def named_time(reference: Annotation, found: Annotation, names: list[str]) -> tuple[float, float]:
    """(seconds of the named speakers' reference time labelled with their own name, their reference seconds)."""
    right = total = 0.0
    for name in names:
        said = reference.label_timeline(name).support()
        total += said.duration()
        right += said.crop(found.label_timeline(name).support(), mode="intersection").duration()
    return right, total


def data_url(audio) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio, RATE)).decode()


@dataclass
class Score:
    """The figures of one group of meetings (one speaker count, or all), pyannote accumulating the DER."""

    der: DiarizationErrorRate = field(default_factory=lambda: DiarizationErrorRate(collar=COLLAR))
    baseline: DiarizationErrorRate = field(default_factory=lambda: DiarizationErrorRate(collar=COLLAR))
    meetings: int = 0
    count_right: int = 0
    audio_s: float = 0.0
    compute_s: float = 0.0

    def add(self, meeting: Meeting, found: Annotation, seconds: float) -> None:
        reference = meeting.reference()
        self.der(reference, found, uem=uem(meeting.duration))
        self.baseline(reference, one_speaker(reference), uem=uem(meeting.duration))
        self.meetings += 1
        self.count_right += len(found.labels()) == len(meeting.speakers)
        self.audio_s += meeting.duration
        self.compute_s += seconds

    def figures(self) -> dict:
        def parts(metric: DiarizationErrorRate) -> dict:
            total = metric[:]
            speech = total["total"] or 1.0
            return {"der": abs(metric), "missed": total["missed detection"] / speech,
                    "false_alarm": total["false alarm"] / speech, "confusion": total["confusion"] / speech}

        return {"meetings": self.meetings, "audio_s": round(self.audio_s, 1), **parts(self.der),
                "count_right": self.count_right / max(1, self.meetings),
                "baseline_der": abs(self.baseline), "baseline_count_right": 0.0,
                "rtf": self.compute_s / max(self.audio_s, 1e-9)}


@dataclass
class Naming:
    """Known speakers named right and false matches at one speaker_similarity_threshold."""

    right_s: float = 0.0
    known_s: float = 0.0
    impostor_runs: int = 0
    false_matches: int = 0
    der: DiarizationErrorRate = field(default_factory=lambda: DiarizationErrorRate(collar=COLLAR))

    def add(self, meeting: Meeting, found: Annotation) -> None:
        self.der(meeting.reference(), found, uem=uem(meeting.duration))
        right, total = named_time(meeting.reference(), found, [voice.name for voice in meeting.known])
        self.right_s += right
        self.known_s += total
        if meeting.impostor is not None:
            self.impostor_runs += 1
            self.false_matches += meeting.impostor.name in found.labels()

    def figures(self) -> dict:
        return {"named_right": self.right_s / max(self.known_s, 1e-9), "known_s": round(self.known_s, 1),
                "false_match": self.false_matches / max(1, self.impostor_runs), "false_match_count": self.false_matches,
                "impostor_runs": self.impostor_runs, "der": abs(self.der)}


class Diarizer:
    """The engine's diarization route, as a client calls it."""

    def __init__(self, url: str, model: str = MODEL, timeout: float = 600.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.model = model

    def __call__(self, meeting: Meeting, speech: Speech | None = None, threshold: float | None = None,
                 model: str | None = None) -> tuple[Annotation, float]:
        """The answer for the meeting as an annotation, and the seconds it took; with ``speech``, the known speakers'
        and the impostor's reference samples go along."""
        fields: dict[str, str | list[str]] = {"model": model or self.model, "response_format": "diarized_json",
                                             "chunking_strategy": "auto"}
        if speech is not None:
            given = [*meeting.known, *([meeting.impostor] if meeting.impostor else [])]
            fields["known_speaker_names[]"] = [voice.name for voice in given]
            fields["known_speaker_references[]"] = [data_url(speech.reference_sample(voice)) for voice in given]
        if threshold is not None:
            fields["speaker_similarity_threshold"] = str(threshold)
        started = time.perf_counter()
        answer = self.http.post("/v1/audio/transcriptions", data=fields,
                                files={"file": ("meeting.wav", wav_bytes(meeting.audio, RATE), "audio/wav")})
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.status_code}: {answer.text}")
        seconds = time.perf_counter() - started
        return hypothesis(TranscriptionDiarized.model_validate(answer.json())), seconds

    def close(self) -> None:
        self.http.close()


def threshold_key(threshold: float | None, model: str = MODEL) -> str:
    key = "default" if threshold is None else str(threshold)
    return key if model == MODEL else f"{model}: {key}"


def run(url: str, meetings: int, speakers: list[int], seed: int, thresholds: list[float | None],
        progress=None, models: tuple[str, ...] = (MODEL,), turns_per_speaker: int = 3) -> dict:
    """Every meeting (``turns_per_speaker`` turns of each speaker) diarized plainly (by the first of ``models``) and
    with references at each threshold (by each of ``models``); the figures by speaker count."""
    rng = random.Random(seed)
    speech, diarize = Speech(url), Diarizer(url, models[0])
    scores: dict[str, Score] = {str(count): Score() for count in speakers} | {"all": Score()}
    naming = {threshold_key(t, m): Naming() for m in models for t in thresholds}
    try:
        for count in speakers:
            for _ in range(meetings):
                meeting = make_meeting(count, rng, speech, turns_per_speaker)
                found, seconds = diarize(meeting)
                scores[str(count)].add(meeting, found, seconds)
                scores["all"].add(meeting, found, seconds)
                for model in models:
                    for threshold in thresholds:
                        named, _ = diarize(meeting, speech, threshold, model)
                        naming[threshold_key(threshold, model)].add(meeting, named)
                if progress:
                    progress(f"{count} speakers, {meeting.duration:.0f} s: found {sorted(found.labels())}")
    finally:
        speech.close()
        diarize.close()
    return {"model": MODEL, "seed": seed, "meetings_per_count": meetings, "collar": COLLAR,
            "by_speakers": {key: score.figures() for key, score in scores.items()},
            "naming": {key: value.figures() for key, value in naming.items()}, "targets": TARGETS}


def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def table(result: dict) -> str:
    lines = [f"# bench.diarization: {result['model']}, {result['meetings_per_count']} meetings per speaker count, "
             f"seed {result['seed']}, DER collar {result['collar']} s; {platform.machine()}, {os.cpu_count()} CPUs",
             "| speakers | meetings | audio | DER | missed | false alarm | confusion | count right | "
             "baseline DER | baseline count right | RTF |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, f in result["by_speakers"].items():
        lines.append(f"| {key} | {f['meetings']} | {f['audio_s']:.0f} s | {percent(f['der'])} | "
                     f"{percent(f['missed'])} | {percent(f['false_alarm'])} | {percent(f['confusion'])} | "
                     f"{percent(f['count_right'])} | {percent(f['baseline_der'])} | "
                     f"{percent(f['baseline_count_right'])} | {f['rtf']:.2f} |")
    lines += ["", "| speaker_similarity_threshold | known speakers named right | known speech | "
              "false matches (absent voice named) |", "|---|---|---|---|"]
    for key, f in result["naming"].items():
        label = "engine default" if key == "default" else key
        lines.append(f"| {label} | {percent(f['named_right'])} | {f['known_s']:.0f} s | "
                     f"{f['false_match_count']}/{f['impostor_runs']} ({percent(f['false_match'])}) |")
    return "\n".join(lines)


def serve(config_path: str | None = None) -> HarmonyProcess:
    """``harmony serve`` with the default config (or ``config_path``), synthesis seeded (the same meetings every
    run)."""
    default = Path(__file__).resolve().parents[1] / "services/defaults/serve.yaml"
    config = yaml.safe_load(Path(config_path or default).read_text())
    for model in config["models"]:
        if model["backend"] in {"piper", "espeak"}:
            model["options"] = {**model.get("options", {}), "seed": 1}
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "serve.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({**config, "data_dir": os.path.join(folder, "data")}, handle)
    return HarmonyProcess(config=path).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meetings", type=int, default=3, help="meetings per speaker count")
    parser.add_argument("--speakers", default="2,3,4", help="speaker counts, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--turns", type=int, default=3, help="turns of each speaker in a meeting")
    parser.add_argument("--thresholds", default="0.65,0.85,0.9",
                        help="speaker_similarity_threshold values swept besides the engine's default")
    parser.add_argument("--url", help="a running engine (else a `harmony serve` is started)")
    parser.add_argument("--config", help="the serve.yaml of the `harmony serve` started (default: the engine's)")
    parser.add_argument("--naming-models", default=MODEL,
                        help="the routes (public model names, comma-separated) whose naming passes are measured")
    parser.add_argument("--json", action="store_true", help="the figures as JSON instead of the table")
    args = parser.parse_args(argv)
    harmony = None if args.url else serve(args.config)
    url = args.url if harmony is None else harmony.url
    thresholds: list[float | None] = [None, *(float(t) for t in args.thresholds.split(",") if t)]
    try:
        result = run(url, args.meetings, [int(n) for n in args.speakers.split(",")], args.seed, thresholds,
                     progress=lambda line: print(line, file=sys.stderr, flush=True),
                     models=tuple(m for m in args.naming_models.split(",") if m), turns_per_speaker=args.turns)
    finally:
        if harmony is not None:
            harmony.stop()
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
