"""Nothing of a DAV request body is read before its credentials are checked.

Twisted reads a request's body (and :class:`apiserver.transport.http.ApiRequest` spools a PUT
to a temporary file) before any resource renders it, so an answer of 401 or 429 would come
after the whole body was stored.  For a request under ``/dav/`` that has a body, the request
instead stops reading its connection once the headers are in (what already arrived with them,
at most one socket read, is held in memory), asks the admission ``/dav/`` registered on the
site (:attr:`ApiSite.admit_body`: ``https_only``, the path, Basic credentials, Anvil, the
password, IP restrictions), and only then reads the body, or answers the refusal and closes.
``Expect: 100-continue`` is answered only once admitted.

:class:`InFlightBodies` bounds the bytes of DAV bodies being received or kept at once, all
clients together (``[dav] max_bodies_in_flight``): past it a body gets 503 with
``Retry-After``, before it is read when it declares its length (413 when it is larger than the
whole bound).
"""

from __future__ import annotations

import threading
from typing import Callable

#: Seconds a client is told to wait when the bodies in flight are at their bound.
BUSY_RETRY_AFTER = 5

BUSY_MESSAGE = "the server is receiving as many uploads as it may hold at once; try again shortly"


class BodyRefused(Exception):
    """The answer to a request whose body is not wanted: ``status``, ``message``, extra ``headers``."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


class InFlightBodies:
    """Bytes of request bodies received or kept right now, bounded by ``limit()`` (read per use)."""

    def __init__(self, limit: Callable[[], int]):
        self._limit = limit
        self._lock = threading.Lock()  # released from any thread that ends a request
        self.used = 0

    @property
    def limit(self) -> int:
        return self._limit()

    def take(self, size: int) -> bool:
        """Count ``size`` more bytes; False (nothing counted) when that would pass the bound."""
        with self._lock:
            if self.used + size > self._limit():
                return False
            self.used += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.used = max(0, self.used - size)


def busy(size: int = 0, limit: int = 0) -> BodyRefused:
    """The refusal of a body past :class:`InFlightBodies`' bound: 503 to try again, or 413 for a
    body of ``size`` larger than the whole bound ``limit`` (it would never fit)."""
    if size > limit > 0:
        return BodyRefused(413, f"request body larger than {limit} bytes ([dav] max_bodies_in_flight)")
    return BodyRefused(503, BUSY_MESSAGE, {"Retry-After": str(BUSY_RETRY_AFTER)})
