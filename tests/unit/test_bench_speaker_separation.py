"""bench/speaker_separation.py's pure figures: the equal error rate and the clustering purity."""

from __future__ import annotations

import numpy as np
import pytest

from bench.speaker_separation import equal_error_rate, purity


def test_equal_error_rate():
    same = np.array([True] * 4 + [False] * 4)
    apart = np.array([0.9, 0.8, 0.85, 0.95, 0.1, 0.2, 0.3, 0.15])
    eer, threshold = equal_error_rate(apart, same)
    assert eer == 0.0 and 0.3 < threshold <= 0.8
    # one different pair above one same pair: one error of four on each side
    crossed = np.array([0.9, 0.8, 0.4, 0.95, 0.1, 0.5, 0.3, 0.15])
    assert equal_error_rate(crossed, same)[0] == pytest.approx(0.25)
    assert equal_error_rate(-apart, same)[0] == pytest.approx(1.0)


def test_purity_and_coverage():
    truth = np.array([0, 0, 0, 1, 1, 2])
    assert purity(truth, np.array([2, 2, 2, 0, 0, 1])) == (1.0, 1.0)  # the names of the clusters do not matter
    assert purity(truth, np.zeros(6, dtype=int)) == (pytest.approx(3 / 6), 1.0)  # one cluster: pure as its largest
    assert purity(truth, np.arange(6)) == (1.0, pytest.approx(3 / 6))  # every window alone: each voice split
