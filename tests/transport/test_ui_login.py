"""The UI login's form handling: Content-Type and the three fields, parsed without Twisted's form parser."""

import pytest
from twisted.web.test.requesthelper import DummyRequest

from apiserver.transport.ui_login import form_type_ok, parse_login_form


@pytest.mark.parametrize("content_type, ok", [
    (b"application/x-www-form-urlencoded", True), (b"Application/X-WWW-Form-Urlencoded; charset=UTF-8", True),
    (b"application/x-www-form-urlencoded; charset=latin-1", False), (b"multipart/form-data; boundary=x", False),
    (b"application/json", False), (None, False)])
def test_form_type(content_type, ok):
    """Only URL-encoded forms in UTF-8 (or without charset) are accepted."""
    request = DummyRequest([b"login"])
    if content_type is not None:
        request.requestHeaders.setRawHeaders(b"content-type", [content_type])
    assert form_type_ok(request) is ok


def test_fields_are_decoded_and_domain_is_optional():
    """Percent-escapes and + decode as UTF-8; a missing or empty domain means the appliance."""
    assert parse_login_form(b"username=bob&domain=ex.com&password=p%C3%BC+w%26rd") == {
        "username": "bob", "domain": "ex.com", "password": "pü w&rd"}
    assert parse_login_form(b"username=admin&password=&other=1")["domain"] is None


@pytest.mark.parametrize("body", [b"", b"password=x", b"username=&password=x", b"username=a&password=x&password=y",
                                  b"username=%e9&password=x", b"username=a&password=" + b"x" * 1025])
def test_refused_forms_give_a_reason(body):
    """Missing, empty, repeated, non-UTF-8 or over-long fields are refused with a reason."""
    assert isinstance(parse_login_form(body), str)
