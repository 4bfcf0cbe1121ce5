"""Windows of speech to speakers, pure: agglomerative clustering of their speaker embeddings, smoothing, naming.

Each window (1.6 s of speech, one every 0.5 s) has a unit-length GE2E embedding. Windows are clustered with average
linkage over cosine distance (scikit-learn's ``AgglomerativeClustering``): two groups join while the mean distance
between their members is under ``DISTANCE_THRESHOLD``, so the number of speakers is what that threshold leaves,
bounded by ``min_speakers``/``max_speakers`` when a request gives them (then the tree is cut at that count). A
cluster of fewer than ``MIN_CLUSTER_WINDOWS`` windows (about a second and a half of speech) is a stray, not a
speaker: its windows go to the nearest larger cluster. The labels are then smoothed with a running majority (for two
speakers, a median filter) over ``SMOOTHING_WINDOWS`` windows, so a speaker does not flicker inside a turn.

Overlapping speech is not separated: a window holds one label, the speaker who dominates its embedding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

# Cosine distance under which two groups of windows are one speaker (average linkage). Measured on the engine's
# voices (Piper joe, espeak-ng en): windows of one voice lie 0.07-0.25 apart (5th-95th percentile), of two voices
# 0.48-0.65; human voices of one speaker vary more, so the cut sits above the middle.
DISTANCE_THRESHOLD = 0.4
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
    labels = _agglomerate(embeddings, None, threshold)
    count = len(set(labels.tolist()))
    if not low <= count <= high:
        labels = _agglomerate(embeddings, min(max(count, low), high), threshold)
    labels = _absorb_strays(embeddings, labels, keep=low)
    return _in_order(labels)


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


def name_speakers(means: dict[int, np.ndarray], references: Sequence[tuple[str, np.ndarray]],
                  threshold: float = SPEAKER_SIMILARITY_THRESHOLD) -> dict[int, str]:
    """A name for each label: a known speaker's when its centroid and the reference's embedding have a cosine
    similarity of at least ``threshold`` (each reference names at most one cluster, the pairs chosen for the
    largest total similarity), else ``A``, ``B``, ... in the labels' order, as OpenAI labels unknown speakers."""
    named: dict[int, str] = {}
    labels = sorted(means)
    if references and labels:
        from scipy.optimize import linear_sum_assignment

        similarity = np.array([[float(means[label] @ _unit(vector)) for _, vector in references] for label in labels])
        rows, cols = linear_sum_assignment(-similarity)
        for row, col in zip(rows, cols):
            if similarity[row, col] >= threshold:
                named[labels[row]] = references[col][0]
    letters = (chr(ord("A") + i) if i < 26 else f"S{i + 1}" for i in range(len(labels) + 26))
    taken = set(named.values())
    for label in labels:
        if label not in named:
            named[label] = next(letter for letter in letters if letter not in taken)
    return named


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
