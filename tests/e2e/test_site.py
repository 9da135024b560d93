"""The web root: unknown paths answer a short plain-text 404 naming the API's URLs."""

import http.client
import urllib.error
import urllib.request

import pytest


@pytest.mark.parametrize("path", ["/", "/nope", "/admin.php", "/soap.php"])
def test_unknown_paths_get_plain_404(running_server, path):
    """No HTML error page and no server details, just where the API is."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(running_server.url + path, timeout=10)
    assert info.value.code == 404
    assert info.value.headers["Content-Type"].startswith("text/plain")
    assert b"/soap" in info.value.read()


def _exchange(running_server, method: str, path: str):
    conn = http.client.HTTPConnection(running_server.url.split("//", 1)[1], timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    return response.status, response.getheader("Allow"), response.getheader("Content-Type") or "", response.read()


@pytest.mark.parametrize("method", ["OPTIONS", "PUT", "DELETE", "PATCH", "TRACE"])
@pytest.mark.parametrize("path, allow", [("/soap", "GET, HEAD, POST"), ("/apnscp.wsdl", "GET, HEAD"),
                                         ("/xmlrpc", "POST"), ("/login", "GET, HEAD, POST"), ("/logout", "POST")])
def test_other_methods_get_405_naming_the_allowed_ones(running_server, method, path, allow):
    """Methods a URL does not serve get 405 with Allow, never Twisted's HTML 501 page."""
    status, allowed, ctype, body = _exchange(running_server, method, path)
    assert (status, allowed) == (405, allow)
    assert b"<html" not in body.lower() and not ctype.startswith("text/html")


@pytest.mark.parametrize("path, status", [("/soap?wsdl", 200), ("/apnscp.wsdl", 200), ("/login", 401),
                                          ("/logout", 405), ("/xmlrpc", 405)])
def test_head_answers_like_get_without_a_body(running_server, path, status):
    """HEAD is GET without the body, and a POST-only URL answers 405 instead of an empty 500."""
    got, _, _, body = _exchange(running_server, "HEAD", path)
    assert (got, body) == (status, b"")
