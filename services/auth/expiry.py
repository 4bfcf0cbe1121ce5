"""``--expires``: a date (2027-01-31, end of that day UTC), a time (2027-01-31T12:00:00Z) or a duration (90d, 12h)."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_expires(value: str | None, now: float | None = None) -> float | None:
    """Unix seconds of the expiry, or None for 'never'; ValueError names what is accepted."""
    if value is None or value.strip().lower() in ("", "never", "none"):
        return None
    text = value.strip()
    now = time.time() if now is None else now
    duration = re.fullmatch(r"(\d+)\s*([smhdw])", text.lower())
    if duration:
        return now + int(duration.group(1)) * _UNITS[duration.group(2)]
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text) + timedelta(days=1)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is not a date (2027-01-31), a time (2027-01-31T12:00:00Z) or a duration "
                         "(30d, 12h, 90m)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
