"""Fixtures of the notices tests."""

from tests.accounts.support import harness  # noqa: F401 - the fixture
