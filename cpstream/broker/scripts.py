"""The Lua scripts, one per atomic step, and the key names they work on.

Per topic T (``instances``, ``messages``) under a prefix P:

* ``P:s:T``: a Redis Stream whose entry ids are our seqs (``<seq>-0``), trimmed
  with ``MAXLEN ~``: an older or repeated id is refused by Redis itself;
* ``P:m:T``: a hash: ``e`` the database's epoch, ``s`` the last seq appended,
  ``f`` the floor (every event after it is in the stream, unless trimmed);
* ``P:st:T``: a hash of the state a snapshot is made of (instances: id -> item);
* ``P:c:T``: the Pub/Sub channel of live batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Keys:
    """The keys and channel of one topic."""

    stream: str
    meta: str
    state: str
    channel: str

    @classmethod
    def of(cls, prefix: str, topic: str) -> Keys:
        return cls(
            f"{prefix}:s:{topic}",
            f"{prefix}:m:{topic}",
            f"{prefix}:st:{topic}",
            f"{prefix}:c:{topic}",
        )

    @property
    def all(self) -> list[str]:
        return [self.stream, self.meta, self.state]


def ended_sessions(prefix: str) -> tuple[str, str]:
    """The set of browser sessions ended by a logout, and the channel naming new ones."""
    return f"{prefix}:ended", f"{prefix}:c:ended"


@dataclass(frozen=True)
class Script:
    """A Lua script, called by its SHA1 only (:meth:`load` it on each new connection).

    Never txredisapi's ``eval``, whose NOSCRIPT fallback re-sends the script later,
    behind commands sent after it: batches would reach Redis out of order.
    """

    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()

    def load(self, proto: Any) -> Any:
        return proto.execute_command("SCRIPT", "LOAD", self.text)

    def __call__(self, proto: Any, keys: list[str], args: list[Any]) -> Any:
        return proto.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


# Append a batch, trim, update the state, publish: only if the meta says the stream ends
# at ARGV[2] (the publisher's ``prev``) in epoch ARGV[1]; else {0, epoch, seq} and nothing.
# ARGV: epoch, prev, maxlen, channel, message, n, (seq, event) * n, k, (key, value|"") * k
PUBLISH = Script("""
local m = redis.call('HMGET', KEYS[2], 'e', 's')
if m[1] ~= ARGV[1] or m[2] ~= ARGV[2] then
  return {0, m[1] or '', m[2] or ''}
end
local i = 6
local last = ARGV[2]
for _ = 1, tonumber(ARGV[i]) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[i + 1] .. '-0', 'e', ARGV[i + 2])
  last = ARGV[i + 1]
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  if ARGV[i + 2] == '' then
    redis.call('HDEL', KEYS[3], ARGV[i + 1])
  else
    redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
  end
  i = i + 2
end
redis.call('HSET', KEYS[2], 's', last)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {1, ARGV[1], last}
""")

# Replace the topic: history, state and meta at once, then tell the gateways.
# ARGV: epoch, seq, floor, channel, message, n, (seq, event) * n, k, (key, value) * k
RESET = Script("""
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
local i = 6
for _ = 1, tonumber(ARGV[i]) do
  redis.call('XADD', KEYS[1], ARGV[i + 1] .. '-0', 'e', ARGV[i + 2])
  i = i + 2
end
i = i + 1
for _ = 1, tonumber(ARGV[i]) do
  redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
  i = i + 2
end
redis.call('HSET', KEYS[2], 'e', ARGV[1], 's', ARGV[2], 'f', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
""")

# A gateway's atomic read: {epoch, seq, floor, state, entries, whole}. When the
# stream still continues the gateway's (epoch ARGV[1], seq ARGV[2]), only the
# entries after its seq (whole = 0); else the newest ARGV[3] entries, newest first
# (whole = 1). An empty epoch: nothing published yet.
LOAD = Script("""
local m = redis.call('HMGET', KEYS[2], 'e', 's', 'f')
if not m[1] then
  return {'', '0', '0', {}, {}, 1}
end
local s = tonumber(m[2])
local f = tonumber(m[3]) or 0
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first > 0 then
  local oldest = tonumber(string.match(first[1][1], '^(%d+)'))
  if oldest - 1 > f then f = oldest - 1 end
elseif s > f then
  f = s
end
local known = tonumber(ARGV[2])
local state = redis.call('HGETALL', KEYS[3])
if m[1] == ARGV[1] and f <= known and known <= s then
  local after = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2] .. '-0', '+')
  return {m[1], m[2], tostring(f), state, after, 0}
end
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[3])
return {m[1], m[2], tostring(f), state, newest, 1}
""")
