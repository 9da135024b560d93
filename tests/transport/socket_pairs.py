"""Connected loopback TCP pairs for tests that write into a real socket from the server's side."""

from __future__ import annotations

import socket


def tcp_pair(send_buffer=64 * 1024):
    """A connected loopback TCP pair: the server's end non-blocking with a small send buffer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, send_buffer)
    server.setblocking(False)
    return server, client
