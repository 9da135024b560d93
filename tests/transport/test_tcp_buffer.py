"""ConnectionBuffer against Twisted's own tcp.Connection on a real loopback socket: the internals it
reads are the ones Twisted keeps, so an upgrade that changes them fails here."""

from __future__ import annotations


from zope.interface import implementer

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol

from apiserver.transport.tcp_buffer import ConnectionBuffer
from tests.transport.socket_pairs import tcp_pair


class WriterRegistry:
    """The part of a reactor a tcp.Connection calls when it wants to be told it may write."""

    def __init__(self):
        self.writers = set()

    def addWriter(self, descriptor):
        self.writers.add(descriptor)

    def removeWriter(self, descriptor):
        self.writers.discard(descriptor)


@implementer(IPushProducer)
class RecordingProducer:
    """A streaming producer that records its pauses and resumes."""

    def __init__(self):
        self.calls = []

    def pauseProducing(self):
        self.calls.append("pause")

    def resumeProducing(self):
        self.calls.append("resume")

    def stopProducing(self):
        self.calls.append("stop")


def connection_pair(send_buffer=64 * 1024):
    """(Twisted tcp.Connection on the server end, its reactor stand-in, the client socket)."""
    server, client = tcp_pair(send_buffer)
    reactor = WriterRegistry()
    connection = tcp.Connection(server, Protocol(), reactor)
    connection.connected = True
    return connection, reactor, client


def drain(sock, expected: int) -> bytes:
    """Everything the client can read up to ``expected`` bytes."""
    sock.settimeout(5)
    received = b""
    while len(received) < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    return received


def test_bytes_written_are_held_until_sent_now():
    """A write is held by the connection's buffer; send_now puts it on the socket and the buffer is empty."""
    connection, reactor, client = connection_pair()
    try:
        buffer = ConnectionBuffer(connection)
        assert not buffer.holds_bytes()
        connection.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert buffer.holds_bytes() and connection in reactor.writers
        assert buffer.send_now() is True
        assert not buffer.holds_bytes() and connection not in reactor.writers
        assert drain(client, 19) == b"HTTP/1.1 200 OK\r\n\r\n"
    finally:
        connection.socket.close(), client.close()


def test_a_full_socket_leaves_bytes_held():
    """More than the socket takes: send_now reports bytes still held, and they all arrive once read."""
    connection, _, client = connection_pair()
    payload = bytes(range(256)) * 16384  # 4 MB, far over both buffers
    try:
        buffer = ConnectionBuffer(connection)
        connection.write(payload)
        assert buffer.send_now() is False and buffer.holds_bytes()
        received = b""
        client.settimeout(5)
        while buffer.holds_bytes():
            received += client.recv(1 << 20)
            connection.doWrite()
        assert received + drain(client, len(payload) - len(received)) == payload
    finally:
        connection.socket.close(), client.close()


def test_pause_until_writable_pauses_the_connections_producer_and_it_resumes_it():
    """The connection's streaming producer is paused at once and resumed by the connection's next doWrite."""
    connection, reactor, client = connection_pair()
    producer, fallback = RecordingProducer(), []
    try:
        connection.registerProducer(producer, True)
        ConnectionBuffer(connection).pause_until_writable(lambda: fallback.append("paused"))
        assert producer.calls == ["pause"] and connection.producerPaused and connection in reactor.writers
        assert not fallback
        connection.doWrite()  # what the reactor calls once the socket is writable
        assert producer.calls == ["pause", "resume"] and not connection.producerPaused
        assert connection not in reactor.writers
    finally:
        connection.socket.close(), client.close()


def test_pause_until_writable_without_a_producer_pauses_the_writer_itself():
    """No producer to pause (or one paused already): the fallback pauses the writer; writing is still asked for."""
    connection, reactor, client = connection_pair()
    fallback = []
    try:
        ConnectionBuffer(connection).pause_until_writable(lambda: fallback.append("paused"))
        assert fallback == ["paused"] and connection in reactor.writers
        producer = RecordingProducer()
        connection.registerProducer(producer, True)
        connection.producerPaused = True
        ConnectionBuffer(connection).pause_until_writable(lambda: fallback.append("again"))
        assert fallback == ["paused", "again"] and producer.calls == []
    finally:
        connection.socket.close(), client.close()
