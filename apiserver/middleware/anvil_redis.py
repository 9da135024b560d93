"""Anvil state in Redis (``[anvil] backend=redis``), so several nodes share counters and blocks.

One hash per address (``apiserver:anvil:<address>``: ``n`` failures, ``e`` window end, ``u`` block
end, clock seconds) that Redis expires when both the window and the block are over.  A failure
is counted by a Lua script, atomically across nodes, with exactly the transition of
:func:`apiserver.middleware.anvil_store.after_failure`; so exactly one node sees the failure that
starts a block, and that node logs the block and its end.  The redis client is blocking, so
every call runs on the ``run_blocking`` it is given (the blocking pool).  Memory is bounded by
Redis's own expiry (and its ``maxmemory`` policy), not by ``[anvil] max_tracked``.
"""

from __future__ import annotations

from typing import Callable, Optional

import redis
from twisted.internet import defer

from apiserver.middleware.anvil_store import AnvilState, AnvilStore

#: Prefix of every Anvil key in Redis (tests pass their own to stay apart).
DEFAULT_PREFIX = "apiserver:anvil:"

# KEYS[1] the address's hash; ARGV now, ttl, limit.  Returns {count, window_end, blocked_until, started}
# with the times as strings (Redis truncates Lua numbers to integers on the way out).
_RECORD_FAILURE = """
local now, ttl, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'n', 'e', 'u')
local n, e, u = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local live
if u > 0 then live = u > now else live = e > now end
if not live then n, e, u = 0, now + ttl, 0 end
n = n + 1
local started = 0
if u == 0 and n >= limit then u, started = now + ttl, 1 end
redis.call('HSET', KEYS[1], 'n', n, 'e', tostring(e), 'u', tostring(u))
redis.call('EXPIRE', KEYS[1], math.ceil(math.max(e, u) - now) + 1)
return {n, tostring(e), tostring(u), started}
"""


class RedisAnvilStore(AnvilStore):
    """:class:`AnvilStore` on a Redis server shared by every node."""

    def __init__(self, url: str, clock, run_blocking: Callable, prefix: str = DEFAULT_PREFIX):
        self.clock = clock
        self.run_blocking = run_blocking
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._record = self.client.register_script(_RECORD_FAILURE)

    def get(self, key: str) -> defer.Deferred:
        d = self.run_blocking(self.client.hmget, self.prefix + key, "n", "e", "u")
        d.addCallback(self._state_from_hash)
        return d

    def _state_from_hash(self, values) -> Optional[AnvilState]:
        count, window_end, blocked_until = values
        if count is None:
            return None
        state = AnvilState(int(count), float(window_end), float(blocked_until))
        return state if state.live(self.clock.seconds()) else None

    def record_failure(self, key: str, now: float, ttl: int, limit: int) -> defer.Deferred:
        d = self.run_blocking(self._record, keys=[self.prefix + key], args=[repr(float(now)), ttl, limit])
        d.addCallback(lambda r: (AnvilState(int(r[0]), float(r[1]), float(r[2])), bool(r[3])))
        return d

    def forget(self, key: str) -> defer.Deferred:
        d = self.get(key)
        d.addCallback(lambda state: self.run_blocking(self.client.delete, self.prefix + key)
                      .addCallback(lambda _: state is not None))
        return d

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()
