"""Domain, username, email and gate checks: accepted forms and the messages for refused ones."""

from __future__ import annotations

import pytest

from apiserver.accounts import validation
from apiserver.errors import InvalidArgument


@pytest.mark.parametrize("raw,expected", [("Example.COM", "example.com"), ("example.com.", "example.com"),
                                          (" sub-1.example.co.uk ", "sub-1.example.co.uk"),
                                          ("xn--bcher-kva.example", "xn--bcher-kva.example")])
def test_domains_are_normalised(raw, expected):
    """Case, a trailing dot and outer spaces do not matter."""
    assert validation.normalize_domain(raw) == expected


@pytest.mark.parametrize("raw,reason", [("", "empty"), ("com", "two labels"), ("exa\n.com", r"label 'exa\n'"),
                                        ("a_b.com", "label 'a_b'"), ("example.123", "all digits"),
                                        ("a" * 64 + ".com", "1-63"), ("x." * 127 + "com", "longer than 253")])
def test_bad_domains_are_named(raw, reason):
    """Each refusal names the domain and what is wrong with it; embedded newlines never pass."""
    with pytest.raises(InvalidArgument, match="invalid domain") as caught:
        validation.normalize_domain(raw)
    assert reason in caught.value.message


@pytest.mark.parametrize("raw", ["Bob", "1bob", "bob smith", "b\nob", "a" * 33, "bob@example", ""])
def test_bad_usernames(raw):
    """Usernames are 1-32 lower-case characters starting with a letter or underscore."""
    with pytest.raises(InvalidArgument, match="invalid username"):
        validation.normalize_username(raw)


@pytest.mark.parametrize("raw", ["bob", "@example.com", "bob@", "bob\n@example.com", "bo b@example.com",
                                 "bob..x@example.com", "bob@example.com\r\nBcc: x@example.org", "bob@localhost"])
def test_bad_emails(raw):
    """Addresses need a valid local part and domain; header injection attempts are refused."""
    with pytest.raises(InvalidArgument, match="invalid email address"):
        validation.normalize_email(raw)


def test_gates_parse_case_insensitively():
    """Gate names are UI, SOAP, DAV, CLI in any case; null means every gate."""
    assert validation.parse_gate("soap") == "SOAP"
    assert validation.parse_gate(None) is None
    with pytest.raises(InvalidArgument, match="unknown gate 'FTP'"):
        validation.parse_gate("FTP")
