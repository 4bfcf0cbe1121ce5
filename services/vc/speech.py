"""Reference speech: cut to the segments a VAD found, and checked to be usable."""

from __future__ import annotations

import numpy as np

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.wire import parse_spans


def parse_segments(raw: str | None) -> list[tuple[float, float]] | None:
    """``[{"start": s, "end": e}, ...]`` (seconds) from the ``segments`` form field; None when absent."""
    return parse_spans(raw, "segments")


def require_speech(speech: np.ndarray, rate: int, minimum_s: float, param: str = "file") -> float:
    """The seconds of ``speech``; under ``minimum_s`` a 400 about the upload ``param`` it came from."""
    seconds = len(speech) / rate
    if seconds < minimum_s:
        found = "no speech found" if seconds == 0 else f"only {seconds:.2f} s of speech found"
        raise InvalidRequest(f"{found} in the audio ('{param}'); at least {minimum_s:g} s of clear speech is needed",
                             param=param, code="bad_reference")
    return seconds
