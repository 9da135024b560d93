"""Moving a file's bytes into a non-blocking socket from the reactor, two ways; each call sends
what the socket takes now and never waits for it.

- :class:`MappedSender` (the default, as Apache's ``EnableMMAP On``/``EnableSendfile Off``):
  the kernel copies from a read-only mapping of the file, 4 MiB windows at a time
  (``os.write`` of a ``memoryview`` of the window).  Python never reads the mapped bytes, so a
  file truncated meanwhile makes the write fail with ``EFAULT`` (the kernel's copy meets the
  missing page), never a ``SIGBUS`` in the server.
- :class:`SendfileSender` (``[dav] sendfile = true``): ``os.sendfile``, no copy at all.  Its
  segments point into the page cache one 4 KiB page each; a client on the same machine pays
  for that on every read (``bench_dav_apache.py``: a 10 MB GET cost wrk 3.2 ms against 2.4 ms
  copied), so it is the choice when the server's CPU, not the client, is what runs short.

Both read the file's pages on the reactor thread, which costs nothing when they are in memory;
the mapping asks for each window ahead (``MADV_WILLNEED``) so a cold file is read while earlier
bytes are sent.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Optional

#: What a send ended with.
MORE, FULL, SHRANK, FAILED = "more", "full", "shrank", "failed"

#: Bytes of the file mapped at once (Apache maps 4 MiB segments too).
MAP_WINDOW = 4 * 1024 * 1024


class SendfileSender:
    """``os.sendfile`` from the file ``fileobj`` into the socket."""

    def __init__(self, fileobj):
        self.file_fd = fileobj.fileno()

    def send(self, socket_fd: int, offset: int, size: int, budget: int) -> tuple:
        """From ``offset`` towards ``size`` until ``budget`` bytes are sent, the socket is full
        or the file ends early: ``(bytes sent, MORE | FULL | SHRANK | FAILED, error text)``."""
        sent = 0
        try:
            while budget > sent and offset + sent < size:
                count = os.sendfile(socket_fd, self.file_fd, offset + sent, min(budget - sent, size - offset - sent))
                if count == 0:
                    return sent, SHRANK, ""
                sent += count
        except BlockingIOError:
            return sent, FULL, ""
        except OSError as exc:
            return sent, FAILED, exc.strerror or str(exc)
        return sent, MORE, ""

    def close(self) -> None:
        """Nothing is held beyond the file, which its stream closes."""


class _Unmappable(Exception):
    """The file system cannot map this file."""


class MappedSender:
    """The file ``fileobj`` written into the socket from read-only mapped windows of it."""

    def __init__(self, fileobj, window: int = MAP_WINDOW):
        self.file_fd = fileobj.fileno()
        self._unmappable = None  # the SendfileSender used once the file cannot be mapped
        self.window = max(mmap.ALLOCATIONGRANULARITY, window - window % mmap.ALLOCATIONGRANULARITY)
        self._map = self._view = None
        self._start = self._end = 0

    def send(self, socket_fd: int, offset: int, size: int, budget: int) -> tuple:
        """As :meth:`SendfileSender.send`; a file shorter than ``size`` (now, or truncated while
        mapped) ends in SHRANK once what it holds is sent.  A file that cannot be mapped (a file
        system without ``mmap``) is sent with ``sendfile`` instead."""
        if self._unmappable is not None:
            return self._unmappable.send(socket_fd, offset, size, budget)
        sent = 0
        try:
            while budget > sent and offset + sent < size:
                position = offset + sent
                view = self._mapped(position, size)
                if view is None:
                    return sent, SHRANK, ""
                stop = min(self._end, offset + budget)
                count = os.write(socket_fd, view[position - self._start:stop - self._start])
                sent += count
                if count < stop - position:
                    return sent, FULL, ""
        except _Unmappable:
            count, state, error = self._unmappable.send(socket_fd, offset + sent, size, budget - sent)
            return sent + count, state, error
        except BlockingIOError:
            return sent, FULL, ""
        except ValueError:  # the file was cut between its size and its mapping
            return sent, SHRANK, ""
        except OSError as exc:
            if exc.errno == errno.EFAULT:  # a mapped page past the file's new end
                return sent, SHRANK, ""
            return sent, FAILED, exc.strerror or str(exc)
        return sent, MORE, ""

    def _mapped(self, position: int, size: int) -> Optional[memoryview]:
        """The view of the window holding ``position`` (mapped now if it is not), or None when
        the file ends before ``position``: no more than the file holds now is mapped."""
        if self._view is None or not self._start <= position < self._end:
            self.close()
            start = position - position % mmap.ALLOCATIONGRANULARITY
            length = min(self.window, size - start, os.fstat(self.file_fd).st_size - start)
            if start + length <= position:
                return None
            try:
                self._map = mmap.mmap(self.file_fd, length, access=mmap.ACCESS_READ, offset=start)
            except OSError as exc:
                if exc.errno not in (errno.ENODEV, errno.EACCES, errno.EINVAL):
                    raise
                self._unmappable = SendfileSender(self)
                raise _Unmappable() from exc
            self._map.madvise(mmap.MADV_WILLNEED)
            self._view = memoryview(self._map)
            self._start, self._end = start, start + length
        return self._view

    def fileno(self) -> int:
        """The file's descriptor (what :class:`SendfileSender` is given when mapping fails)."""
        return self.file_fd

    def close(self) -> None:
        """Unmap the window (the views written from are gone by now)."""
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None
