"""Swap windows: ranges of the market's clock in which no new model starts trading (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class Blackout:
    """``HH:MM-HH:MM`` ranges in a time zone; a range whose end is before its start crosses
    midnight (``23:50-00:10``). The start is inside the range, the end is not."""

    def __init__(self, ranges: Sequence[str], zone: str = "UTC") -> None:
        self._ranges = [tuple(_minutes(part) for part in entry.split("-")) for entry in ranges]
        self._zone = ZoneInfo(zone)
        self.description = ", ".join(ranges) + (f" ({zone})" if ranges else "")

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def covers(self, market_time: float) -> bool:
        """True when the bar at `market_time` (Unix seconds) is inside a range."""
        return self.ends(market_time) is not None

    def ends(self, market_time: float) -> float | None:
        """When the range the bar at `market_time` is inside ends (market time), or None."""
        if not self._ranges:
            return None
        local = datetime.fromtimestamp(market_time, UTC).astimezone(self._zone)
        minute = local.hour * 60 + local.minute
        for start, end in self._ranges:
            inside = start <= minute < end if start <= end else minute >= start or minute < end
            if inside:
                midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
                ending = midnight + timedelta(minutes=end)
                if ending <= local:  # a range across midnight ends tomorrow
                    ending += timedelta(days=1)
                return ending.timestamp()
        return None
