"""Reference speech: cut to the segments a VAD found, and checked to be usable."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from services.core.contracts.errors import InvalidRequest


def parse_segments(raw: str | None) -> list[tuple[float, float]] | None:
    """``[{"start": s, "end": e}, ...]`` (seconds) from a form field; None when absent."""
    if raw is None or raw == "":
        return None
    try:
        data: Any = json.loads(raw)
        segments = [(float(s["start"]), float(s["end"])) for s in data]
    except (ValueError, TypeError, KeyError):
        raise InvalidRequest("'segments' must be a JSON list of {\"start\": seconds, \"end\": seconds}",
                             param="segments") from None
    for start, end in segments:
        if not (0 <= start < end and math.isfinite(end)):
            raise InvalidRequest(f"segment [{start}, {end}] is not a valid time range", param="segments")
    return segments


def require_speech(speech: np.ndarray, rate: int, minimum_s: float, param: str = "file") -> float:
    """The seconds of ``speech``; under ``minimum_s`` a 400 about the upload ``param`` it came from."""
    seconds = len(speech) / rate
    if seconds < minimum_s:
        found = "no speech found" if seconds == 0 else f"only {seconds:.2f} s of speech found"
        raise InvalidRequest(f"{found} in the audio ('{param}'); at least {minimum_s:g} s of clear speech is needed",
                             param=param, code="bad_reference")
    return seconds
