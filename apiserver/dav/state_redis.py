"""WebDAV locks in Redis, when ``[anvil] backend=redis`` already runs there: every node sees them.

Per site a hash (``<prefix><domain>:<site id>``: token -> the lock as JSON) and a sorted set
(the same key and ``:ends``: token by end time, clock seconds); both expire with the site's last
lock.  The domain keeps clusters sharing a Redis apart, the id (never reused) a site re-created
under the same domain from its predecessor's locks.  A lock is created by a Lua script that
drops the site's ended locks, counts the live ones and stores the new one atomically across
nodes, so ``[dav] max_locks`` holds however many nodes take LOCKs at once.  Blocking: the redis
client is, so :mod:`apiserver.dav.state` calls these on the blocking pool.
"""

from __future__ import annotations

import base64
import json
import math

import redis

from apiserver.dav.state_db import LimitReached, LockConflict

#: Prefix of every DAV lock key in Redis (tests pass their own to stay apart).
DEFAULT_PREFIX = "apiserver:davlock:"

# KEYS[1] the site's hash, KEYS[2] its sorted set; ARGV now, max_locks, token, lock JSON, expire,
# and the new lock's root, depth and scope.  Returns {live locks before this one}, {-1} when the
# site holds max_locks already, {-2, root} when the lock at root conflicts (the rule of
# apiserver.dav.state_db.conflicting_lock).
_CREATE = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local root, depth, scope = ARGV[6], ARGV[7], ARGV[8]
local function within(path, top)
  if path == top then return true end
  if string.sub(top, -1) ~= '/' then top = top .. '/' end
  return string.sub(path, 1, #top) == top
end
local ended = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, token in ipairs(ended) do redis.call('HDEL', KEYS[1], token) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
local held = redis.call('ZCARD', KEYS[2])
if held >= limit then return {-1} end
for _, raw in ipairs(redis.call('HVALS', KEYS[1])) do
  local other = cjson.decode(raw)
  if within(root, other.root) then
    if (other.root == root or other.depth == 'infinity') and not (other.scope == 'shared' and scope == 'shared') then
      return {-2, other.root}
    end
  elseif depth == 'infinity' and within(other.root, root) then
    return {-2, other.root}
  end
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
local last = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
local ttl = math.ceil(last - now) + 1
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {held}
"""

# KEYS as above; ARGV token, lock JSON, expire, now.  Returns 1, or 0 when the lock is gone.
_REFRESH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local last = tonumber(redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')[2])
local ttl = math.ceil(last - tonumber(ARGV[4])) + 1
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""


def encode_lock(lock: dict) -> str:
    """A lock dict as JSON (its owner, XML bytes, in base64)."""
    fields = dict(lock, owner=base64.b64encode(bytes(lock["owner"])).decode("ascii"))
    return json.dumps(fields, separators=(",", ":"))


def decode_lock(text) -> dict:
    lock = json.loads(text)
    lock["owner"] = base64.b64decode(lock["owner"])
    return lock


class RedisDavLocks:
    """The lock half of :class:`apiserver.dav.state_db.DbDavState`, in a Redis shared by every node."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX):
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._create = self.client.register_script(_CREATE)
        self._refresh = self.client.register_script(_REFRESH)

    def _keys(self, site) -> list:
        key = f"{self.prefix}{site.domain}:{site.site_id}"
        return [key, key + ":ends"]

    # ``site``: anything with the site's ``site_id`` and ``domain`` (a DavScope)
    def live_locks(self, site, now: float) -> list:
        """Blocking.  Every lock of the site that has not ended (ended ones are left to Redis and create)."""
        locks = [decode_lock(v) for v in self.client.hvals(self._keys(site)[0])]
        return [lock for lock in locks if lock["expire"] >= now]

    def create_lock(self, site, lock: dict, now: float, max_locks: int) -> None:
        """Blocking.  Store ``lock``; :class:`LimitReached` when the site holds ``max_locks`` already,
        :class:`LockConflict` when a lock taken meanwhile (on any node) conflicts."""
        answer = self._create(keys=self._keys(site), args=[
            repr(float(now)), max_locks, lock["token"], encode_lock(lock), repr(float(lock["expire"])),
            lock["root"], lock["depth"], lock["scope"]])
        if answer[0] == -1:
            raise LimitReached(f"this site holds {max_locks} DAV locks, the most it may ([dav] max_locks)")
        if answer[0] == -2:
            raise LockConflict(answer[1].decode("utf-8"))

    def refresh_lock(self, site, token: str, timeout: float, expire: float) -> bool:
        """Blocking.  Give a live lock a new timeout; False when it is gone."""
        raw = self.client.hget(self._keys(site)[0], token)
        if raw is None:
            return False
        lock = dict(decode_lock(raw), timeout=timeout, expire=expire)
        now = expire - timeout
        return bool(self._refresh(keys=self._keys(site), args=[
            token, encode_lock(lock), repr(float(expire)), repr(float(now if math.isfinite(now) else 0))]))

    def delete_lock(self, site, token: str) -> bool:
        """Blocking.  Remove a lock; False when there was none."""
        hash_key, ends = self._keys(site)
        pipe = self.client.pipeline()
        pipe.hdel(hash_key, token)
        pipe.zrem(ends, token)
        removed, _ = pipe.execute()
        return bool(removed)

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()
