"""What a writer that bypasses a Twisted TCP connection's buffer (``os.sendfile`` into its socket)
must know of that buffer: whether it still holds bytes, how to send them now, and how to be
paused until the socket is writable exactly as the connection pauses its own producer.

Twisted has no public call for "bytes still buffered" or "pause my producer until writable";
these read and set :class:`twisted.internet.abstract.FileDescriptor`'s attributes
(``dataBuffer``, ``offset``, ``_tempDataLen``, ``producerPaused``).  They are kept in this one
class so that a Twisted upgrade that renames them fails ``tests/transport/test_tcp_buffer.py``,
which drives Twisted's own ``tcp.Connection``, not only the sendfile tests.
"""

from __future__ import annotations


class ConnectionBuffer:
    """The write buffer of one Twisted ``tcp.Connection`` (``transport``)."""

    def __init__(self, transport):
        self.transport = transport

    def holds_bytes(self) -> bool:
        """Bytes written to the connection (headers, say) that have not reached the socket yet."""
        transport = self.transport
        return len(transport.dataBuffer) > transport.offset or bool(transport._tempDataLen)

    def send_now(self) -> bool:
        """Send what the buffer holds as far as the socket takes it; True when all of it left."""
        self.transport.doWrite()
        return not self.holds_bytes()

    def pause_until_writable(self, fallback) -> None:
        """Have the connection pause its producer now and resume it once the socket is writable
        and its buffer empty, as it does when its own buffer fills; ``fallback()`` pauses the
        writer itself when the connection has no producer to pause (or it is paused already)."""
        transport = self.transport
        if transport.producer is not None and not transport.producerPaused:
            transport.producerPaused = True
            transport.producer.pauseProducing()
        else:
            fallback()
        transport.startWriting()
