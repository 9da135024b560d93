"""What the HTTP channel of every listener (:class:`apiserver.transport.http.ApiChannel`) does
for a writer that sends an answer straight into the socket (:class:`apiserver.transport.dav_files.SocketStream`),
and what it need not ask the kernel on every request.

Measured on a 64 KB DAV GET (``bench_dav_apache.py``): headers written through Twisted's buffer
cost an ``epoll_ctl`` to be told of writability and another to stop, and two ``setsockopt`` to
cork them with the file; Twisted asks ``getsockname`` for every request of a connection.
"""

from __future__ import annotations

from typing import Optional

from twisted.web.http_headers import Headers


class ChannelShortcuts:
    """A mixin before ``twisted.web.http.HTTPChannel``."""

    _host = None  # the connection's local address, asked once
    _headers_kept: Optional[list] = None  # see take_headers
    #: ``TCP_NODELAY`` was set on this connection (by a writer that wants it; it stays set)
    tcp_no_delay = False

    def getHost(self):
        """The connection's local address (it never changes), asked of the transport once."""
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def take_headers(self, request) -> bytes:
        """The status line and headers of ``request`` (its first ``write``, of nothing), returned
        instead of written to the transport: for a writer that sends them into the socket itself."""
        kept = self._headers_kept = []
        try:
            request.write(b"")
        finally:
            self._headers_kept = None
        return b"".join(kept)

    def writeHeaders(self, version, code, reason, headers):
        kept = self._headers_kept
        if kept is None or not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        # Twisted's own lines (HTTPChannel.writeHeaders, whose Headers sanitised the values),
        # kept; tests/transport/test_http.py compares the two.
        kept.extend((version, b" ", code, b" ", reason, b"\r\n"))
        for name, values in headers.getAllRawHeaders():
            for value in values:
                kept.extend((name, b": ", value, b"\r\n"))
        kept.append(b"\r\n")
