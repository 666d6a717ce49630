"""Presence sets on Redis, changed by Lua scripts so that each update is one atomic step on the server.

A set `<key>` is two Redis keys: `<key>:entries`, a sorted set of `<id>:<member>` scored by deadline, and
`<key>:members`, a hash of each member's number of entries. An update evicts the entries past their
deadline, removes and adds entries, and compares each member's count before and after: two instances
adding the first two entries of a member at once are served one after the other, so exactly one of them
hears that the member joined, and the same goes for the last two leaving. A read takes the members from
the counts, less those whose every entry is past its deadline, so it costs the members, not the entries
(a room's connections). Deadlines are in milliseconds
of the Redis server's clock, so the instances' clocks do not matter. Both keys expire with their latest
deadline, so a set whose instances all died goes away. Scripts need Redis 7 or later (`PEXPIRE NX|GT`).
On a Redis Cluster the two keys are `{<key>}:entries` and `{<key>}:members`: the hash tag puts them in one
slot, as a script touching both needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from .base import PresenceDelta

__all__ = ["RedisPresence"]

_NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: entries, members. ARGV: ttl in ms, the number of entries to remove, those entries, the entries to add.
_UPDATE = (
    _NOW_MS
    + """
local entries, counts = KEYS[1], KEYS[2]
local ttl, removing = tonumber(ARGV[1]), tonumber(ARGV[2])
local before = {}
local function count(entry, change)
  local member = string.sub(entry, string.find(entry, ':', 1, true) + 1)
  if before[member] == nil then
    before[member] = tonumber(redis.call('HGET', counts, member) or '0')
  end
  if redis.call('HINCRBY', counts, member, change) <= 0 then
    redis.call('HDEL', counts, member)
  end
end
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', entries, '-inf', now)) do
  redis.call('ZREM', entries, entry)
  count(entry, -1)
end
for index = 3, 2 + removing do
  if redis.call('ZREM', entries, ARGV[index]) == 1 then count(ARGV[index], -1) end
end
for index = 3 + removing, #ARGV do
  if redis.call('ZADD', entries, now + ttl, ARGV[index]) == 1 then count(ARGV[index], 1) end
end
if #ARGV > 2 + removing then
  for _, key in ipairs({entries, counts}) do
    redis.call('PEXPIRE', key, ttl, 'NX')
    redis.call('PEXPIRE', key, ttl, 'GT')
  end
end
local joined, left = {}, {}
for member, had in pairs(before) do
  local has = tonumber(redis.call('HGET', counts, member) or '0')
  if had == 0 and has > 0 then table.insert(joined, member) end
  if had > 0 and has == 0 then table.insert(left, member) end
end
return {joined, left, redis.call('HLEN', counts)}
"""
)

# KEYS: entries, members. The members with an entry that has not expired: each member's count, less its
# entries past their deadline (not evicted yet), so that a read costs the members, not every entry.
_MEMBERS = (
    _NOW_MS
    + """
local expired = {}
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local member = string.sub(entry, string.find(entry, ':', 1, true) + 1)
  expired[member] = (expired[member] or 0) + 1
end
local present, counts = {}, redis.call('HGETALL', KEYS[2])
for index = 1, #counts, 2 do
  if tonumber(counts[index + 1]) > (expired[counts[index]] or 0) then table.insert(present, counts[index]) end
end
return present
"""
)


def _entries(entries: Mapping[str, str]) -> list[str]:
    if any(":" in entry_id for entry_id in entries):
        raise ValueError("presence entry ids cannot contain ':'")
    return [f"{entry_id}:{member}" for entry_id, member in entries.items()]


class RedisPresence:
    """The presence sets of one Redis client (the broker's command client); `hash_tags` on a cluster."""

    def __init__(self, client: Redis | RedisCluster, *, hash_tags: bool = False) -> None:
        self._update = client.register_script(_UPDATE)
        self._members = client.register_script(_MEMBERS)
        self._hash_tags = hash_tags

    def _keys(self, key: str) -> tuple[str, str]:
        base = f"{{{key}}}" if self._hash_tags else key
        return f"{base}:entries", f"{base}:members"

    async def update(
        self, key: str, add: Mapping[str, str], remove: Mapping[str, str], ttl: float
    ) -> PresenceDelta:
        removed, added = _entries(remove), _entries(add)
        lifetime = max(1, math.ceil(ttl * 1000))
        joined, left, present = await self._update(
            keys=list(self._keys(key)), args=[lifetime, len(removed), *removed, *added]
        )
        return PresenceDelta(
            joined=frozenset(member.decode() for member in joined),
            left=frozenset(member.decode() for member in left),
            present=int(present),
        )

    async def members(self, key: str) -> set[str]:
        return {member.decode() for member in await self._members(keys=list(self._keys(key)))}
