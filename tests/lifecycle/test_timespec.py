"""``since`` phrases of admin_delete_site, as PHP's strtotime reads them."""

from __future__ import annotations

import datetime

import pytest

from apiserver.errors import InvalidArgument
from apiserver.lifecycle.timespec import parse_since

NOW = datetime.datetime(2027, 3, 31, 15, 30, tzinfo=datetime.timezone.utc).timestamp()


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(parse_since(text, NOW), datetime.timezone.utc)


def test_relative_phrases():
    """now, N units ago, -N units, last week/month/year, today, yesterday."""
    assert parse_since("now", NOW) == NOW
    assert parse_since("30 days ago", NOW) == NOW - 30 * 86400
    assert parse_since(" 2 Hours  AGO ", NOW) == NOW - 7200
    assert parse_since("-1 week", NOW) == NOW - 7 * 86400
    assert _at("last week") == _at("7 days ago")
    assert _at("last month") == datetime.datetime(2027, 3, 3, 15, 30, tzinfo=datetime.timezone.utc)  # 31 Feb rolls
    assert _at("1 year ago") == datetime.datetime(2026, 3, 31, 15, 30, tzinfo=datetime.timezone.utc)
    assert _at("today") == datetime.datetime(2027, 3, 31, tzinfo=datetime.timezone.utc)
    assert _at("yesterday") == datetime.datetime(2027, 3, 30, tzinfo=datetime.timezone.utc)


def test_absolute_times():
    """Unix seconds (text or number) and ISO 8601 dates, naive as UTC."""
    assert parse_since("1576454400", NOW) == 1576454400 == parse_since(1576454400, NOW)
    assert _at("2019-12-16") == datetime.datetime(2019, 12, 16, tzinfo=datetime.timezone.utc)
    assert _at("2019-12-16T10:00:00+02:00") == datetime.datetime(2019, 12, 16, 8, tzinfo=datetime.timezone.utc)


def test_unreadable_phrases_are_refused_with_the_vocabulary():
    """Anything else is Client.InvalidArgument listing what is understood."""
    for text in ("soon", "3 fortnights hence", "5 lightyears ago", "", True):
        with pytest.raises(InvalidArgument, match="since"):
            parse_since(text, NOW)
