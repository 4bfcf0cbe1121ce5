"""A download's ``Range`` header (RFC 9110, section 14) against the size of what is downloaded (pure).

One range is served (206); a header this module does not serve (another unit, several ranges, a malformed one) is
ignored, as the RFC allows, and the whole content goes (200). A range that starts past the end is a 416.
"""

from __future__ import annotations

import re

from services.core.contracts.errors import HarmonyError

_ONE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


class RangeNotSatisfiable(HarmonyError):
    status_code = 416
    error_type = "invalid_request_error"
    default_code = "range_not_satisfiable"

    def __init__(self, header: str, size: int) -> None:
        super().__init__(f"the range {header.strip()!r} is outside the file's {size} bytes", param="range",
                         headers={"Content-Range": f"bytes */{size}", "x-should-retry": "false"})


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte (inclusive) that ``header`` asks of ``size`` bytes; None: the whole content.
    ``RangeNotSatisfiable`` when it asks for nothing there is."""
    if not header:
        return None
    match = _ONE_RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        if int(last) == 0 or size == 0:
            raise RangeNotSatisfiable(header, size)
        return max(size - int(last), 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise RangeNotSatisfiable(header, size)
    return start, min(int(last), size - 1) if last else size - 1
