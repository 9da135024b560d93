"""The web root: unknown paths answer a short plain-text 404 naming the API's URLs."""

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
