"""The diarize route's clustering, offline: variants against the route's own on the bench's meetings.

    python -m bench.diarization_clustering --seeds 1,2,3,4 [--cache /tmp/windows.pkl]

The meetings of ``bench/diarization.py`` (the same seeds make the same meetings) go once through the engine's own vad
and embed model services with the route's settings (Silero at 0.5, 100 ms padding, 300 ms silence; Resemblyzer 1.6-s
windows every 0.5 s); the windows are cached, then clustered by the route's ``cluster`` and by each variant (the
pruning share, the one-speaker connectivity, auto-tuned pruning after Park et al. 2019 "NME-SC"). Each window's truth
is the one reference speaker talking at its centre (windows in overlaps or pauses are left out). Printed per variant:
the share of meetings whose speaker count is right and the window error (1 - the best one-to-one match of labels to
speakers), by speaker count and by seed, beside the route's own in the first row.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from scipy.optimize import linear_sum_assignment

import services.router.diarization.clustering as route
from bench.diarization import serve
from bench.diarization_meetings import RATE, Speech, make_meeting
from services.core.contracts.wire import EmbeddingWindowsParams, VadParams
from tests.speech import wav_bytes

Clusterer = Callable[[np.ndarray], np.ndarray]


def collect(seeds: list[int], meetings: int = 3) -> list[dict]:
    """Every meeting's windows (start, end, embedding) and reference turns, from a new `harmony serve`."""
    harmony = serve()
    speech = Speech(harmony.url)
    clients = {name: httpx.Client(transport=httpx.HTTPTransport(uds=harmony.service_url(name)[len("unix:"):]),
                                  base_url=f"http://{name}", timeout=600) for name in ("vad", "vc")}
    out = []
    try:
        for seed in seeds:
            rng = random.Random(seed)
            for count in (2, 3, 4):
                for _ in range(meetings):
                    meeting = make_meeting(count, rng, speech)
                    out.append({"seed": seed, "count": count, "turns": [(t.speaker, t.start, t.end)
                                                                        for t in meeting.turns],
                                **_windows(clients, wav_bytes(meeting.audio, RATE))})
                    print(f"seed {seed}, {count} speakers: {len(out[-1]['emb'])} windows", flush=True)
    finally:
        speech.close()
        harmony.stop()
    return out


def _windows(clients: dict[str, httpx.Client], data: bytes) -> dict:
    vad = VadParams(model="silero-vad", threshold=0.5, speech_pad_ms=100, min_silence_duration_ms=300)
    found = clients["vad"].post("/v1/audio/vad", data=vad.form(), files={"file": ("m.wav", data)})
    found.raise_for_status()
    spans = [{"start": s["start"], "end": s["end"]} for s in found.json()["segments"]]
    params = EmbeddingWindowsParams(model="resemblyzer", step_s=0.5, segments=json.dumps(spans))
    answer = clients["vc"].post("/v1/audio/embeddings/windows", data=params.form(), files={"file": ("m.wav", data)})
    answer.raise_for_status()
    windows = answer.json()["data"]
    return {"starts": np.array([w["start"] for w in windows]), "ends": np.array([w["end"] for w in windows]),
            "emb": np.array([w["embedding"] for w in windows], dtype=np.float32)}


def truth(meeting: dict) -> np.ndarray:
    """Each window's speaker (index of its name), -1 where none or several speak at its centre."""
    names = sorted({speaker for speaker, _, _ in meeting["turns"]})
    out = []
    for centre in (meeting["starts"] + meeting["ends"]) / 2:
        talking = [s for s, start, end in meeting["turns"] if start <= centre <= end]
        out.append(names.index(talking[0]) if len(talking) == 1 else -1)
    return np.array(out)


def window_error(labels: np.ndarray, speakers: np.ndarray) -> float:
    known = speakers >= 0
    table = np.zeros((speakers[known].max() + 1, labels[known].max() + 1))
    np.add.at(table, (speakers[known], labels[known]), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(1 - table[rows, cols].sum() / known.sum())


def with_constants(**values: float) -> Clusterer:
    """The route's clustering with some of its constants changed."""
    def run(embeddings: np.ndarray) -> np.ndarray:
        before = {name: getattr(route, name) for name in values}
        for name, value in values.items():
            setattr(route, name, value)
        try:
            return route.cluster(embeddings)
        finally:
            for name, value in before.items():
                setattr(route, name, value)
    return run


def auto_tuned(embeddings: np.ndarray, most: float = 0.25, speakers: int = 10) -> np.ndarray:
    """NME-SC (Park et al. 2019): the pruning that minimizes p / (the largest eigengap / the largest eigenvalue) of
    the normalized Laplacian; the route's own one-speaker rule first."""
    from sklearn.cluster import KMeans

    one = route.cluster(embeddings)
    if len(embeddings) < route.MIN_SPECTRAL_WINDOWS or one.max() == 0:
        return one
    units = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    n, similarity = len(units), units @ units.T
    order, rows = np.argsort(similarity, axis=1), np.arange(len(units))[:, None]
    best: tuple[float, int, np.ndarray] | None = None
    for keep in range(2, max(3, int(most * n)) + 1):
        pruned = np.zeros_like(similarity)
        pruned[rows, order[:, -keep:]] = np.maximum(similarity[rows, order[:, -keep:]], 0)
        affinity = (pruned + pruned.T) / 2
        scale = 1 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-12))
        values, vectors = np.linalg.eigh(np.eye(n) - scale[:, None] * affinity * scale[None, :])
        gaps = np.diff(values[: speakers + 1])
        count = int(np.argmax(gaps[1:])) + 2
        ratio = keep / max(gaps[count - 1] / (values[-1] + 1e-10), 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, count, vectors)
    assert best is not None
    _, count, vectors = best
    spectral = vectors[:, :count] / np.maximum(np.linalg.norm(vectors[:, :count], axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=count, n_init=10, random_state=route.KMEANS_SEED).fit_predict(spectral)
    return route._in_order(route._absorb_strays(embeddings, np.asarray(labels), keep=1))


VARIANTS: dict[str, Clusterer] = {
    "the route's": route.cluster,
    **{f"P_PRUNE {p}": with_constants(P_PRUNE=p) for p in (0.1, 0.15, 0.25)},
    **{f"ONE_SPEAKER_CONNECTIVITY {c}": with_constants(ONE_SPEAKER_CONNECTIVITY=c) for c in (0.03, 0.05)},
    "NME-SC (auto-tuned pruning)": auto_tuned,
}


def evaluate(meetings: list[dict]) -> list[str]:
    seeds = sorted({m["seed"] for m in meetings})
    lines = ["| variant | count right | window error | 2 / 3 / 4 speakers (count, error) | by seed (count, error) |",
             "|---|---|---|---|---|"]
    for name, clusterer in VARIANTS.items():
        found = [(m, route.smooth(clusterer(m["emb"]))) for m in meetings]
        scored = [(m, labels.max() + 1 == m["count"], window_error(labels, truth(m))) for m, labels in found]

        def part(rows: list) -> str:
            return f"{np.mean([r[1] for r in rows]):.0%}, {np.mean([r[2] for r in rows]):.1%}"
        lines.append(f"| {name} | {np.mean([s[1] for s in scored]):.0%} | {np.mean([s[2] for s in scored]):.1%} | "
                     + " / ".join(part([s for s in scored if s[0]['count'] == k]) for k in (2, 3, 4)) + " | "
                     + " ; ".join(f"{seed}: " + part([s for s in scored if s[0]['seed'] == seed]) for seed in seeds)
                     + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--cache", type=Path, help="keep the windows in this pickle (reused if there)")
    args = parser.parse_args(argv)
    if args.cache is not None and args.cache.exists():
        meetings = pickle.loads(args.cache.read_bytes())
    else:
        meetings = collect([int(s) for s in args.seeds.split(",")])
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(meetings))
    print(f"# bench.diarization_clustering: {len(meetings)} meetings, seeds {args.seeds}")
    print("\n".join(evaluate(meetings)))


if __name__ == "__main__":
    main()
