"""Server clock at 100-ns resolution, non-decreasing, freezable; RavenDB date formatting."""

import threading
import time
from datetime import datetime, timezone

TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def format_ticks(ticks: int) -> str:
    """Unix 100-ns ticks as RavenDB writes a UTC date: 7 fractional digits and Z."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:07d}Z"


def parse_date_ticks(text: str) -> int | None:
    """Parse an ISO date (up to 7 fractional digits, Z, offset or none = UTC) into ticks; None if not a date."""
    value = text.strip()
    offset_seconds = 0
    if value.endswith(("Z", "z")):
        value = value[:-1]
    elif len(value) > 19 and value[-6] in "+-" and value[-3] == ":":
        sign = 1 if value[-6] == "+" else -1
        offset_seconds = sign * (int(value[-5:-3]) * 3600 + int(value[-2:]) * 60)
        value = value[:-6]
    fraction = 0
    if "." in value:
        value, digits = value.split(".", 1)
        if not digits.isdigit() or len(digits) > 7:
            return None
        fraction = int(digits.ljust(7, "0"))
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S" if "T" in value else "%Y-%m-%d")
    except ValueError:
        return None
    seconds = int((moment.replace(tzinfo=timezone.utc) - _EPOCH).total_seconds()) - offset_seconds
    return seconds * TICKS_PER_SECOND + fraction


class Clock:
    """UTC clock in 100-ns ticks that never goes backwards and can be frozen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """Whether every reading returns the same tick."""
        return self._frozen

    def freeze(self, frozen: bool) -> int:
        """Freeze (at the current reading) or unfreeze the clock; returns the current tick."""
        with self._lock:
            if frozen and not self._frozen:
                self._last = max(self._last, time.time_ns() // 100)
            self._frozen = frozen
            return self._last

    def now(self) -> int:
        """The current tick: frozen value, or max(wall clock, last reading)."""
        with self._lock:
            if not self._frozen:
                self._last = max(self._last, time.time_ns() // 100)
            return self._last
