"""``since`` of ``admin_delete_site``: the PHP ``strtotime`` phrases ApisCP's DeleteDomain takes.

Understood (case-insensitive, UTC): ``now``, ``today``, ``yesterday``; ``N unit(s) ago`` and
``-N unit(s)`` with units second, minute, hour, day, week, month, year (``30 days ago``);
``last week``/``last month``/``last year``; a Unix time in seconds (``1576454400``); an ISO 8601
date or date and time (``2019-12-16``, ``2019-12-16T10:00:00``, naive means UTC).  Months and
years move the calendar date, as strtotime does (``last month`` on 31 March is 3 March, the
overflow rolled forward).  Anything else is refused with the list above.  No I/O here.
"""

from __future__ import annotations

import calendar
import datetime
import re

from apiserver.errors import InvalidArgument

_UNITS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
          "fortnight": 14 * 86400}
_AGO = re.compile(r"(?:(\d+)\s*([a-z]+?)s?\s+ago|-\s*(\d+)\s*([a-z]+?)s?)")
_LAST = re.compile(r"last\s+([a-z]+)")
HELP = ("now, today, yesterday, 'N days ago' (seconds, minutes, hours, days, weeks, months, years), "
        "'last week', 'last month', 'last year', a Unix time or an ISO 8601 date")


def parse_since(text, now: float) -> float:
    """The Unix time ``text`` names, relative to ``now`` (Unix seconds); InvalidArgument otherwise."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise InvalidArgument(f"since: expected a time such as '30 days ago', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    phrase = " ".join(text.strip().lower().split())
    current = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0)
    if phrase == "now":
        return now
    if phrase == "today":
        return midnight.timestamp()
    if phrase == "yesterday":
        return (midnight - datetime.timedelta(days=1)).timestamp()
    if phrase.isdigit():
        return float(phrase)
    match = _AGO.fullmatch(phrase)
    if match:
        count = int(match.group(1) or match.group(3))
        return _back(current, count, match.group(2) or match.group(4), text)
    match = _LAST.fullmatch(phrase)
    if match:
        return _back(current, 1, match.group(1), text)
    try:
        parsed = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(f"since: cannot read {text[:60]!r}; use {HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def _back(current: datetime.datetime, count: int, unit: str, text: str) -> float:
    unit = unit.rstrip("s") if unit not in _UNITS else unit
    if unit in _UNITS:
        return current.timestamp() - count * _UNITS[unit]
    if unit in ("month", "year"):
        months = count * (12 if unit == "year" else 1)
        return _months_back(current, months).timestamp()
    raise InvalidArgument(f"since: unknown unit {unit!r} in {text[:60]!r}; use {HELP}")


def _months_back(current: datetime.datetime, months: int) -> datetime.datetime:
    """The same day of the month ``months`` earlier; a day the month lacks rolls into the next one."""
    index = current.year * 12 + current.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    last = calendar.monthrange(year, month)[1]
    day = min(current.day, last)
    moved = current.replace(year=year, month=month, day=day)
    return moved + datetime.timedelta(days=current.day - day)
