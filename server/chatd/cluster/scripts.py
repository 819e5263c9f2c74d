"""The Lua scripts a node runs in Redis: each one step that must be atomic.

Every key and channel a script touches shares one hash tag (``{chatd:g}`` for the
cluster's state, ``{chatd:r:<room>}`` for a room), so each script runs on one shard of
a Redis Cluster as it does on a standalone Redis.

* :data:`PUBLISH`: append the payload to the channel's stream (``MAXLEN ~``, and an
  expiry renewed with each entry when one is given), then ``SPUBLISH``
  ``"<id> <previous id> <payload>"``. Each message names the entry before
  it, so a receiver notices a lost message (its ``previous id`` is not the last one it
  saw) and reads what it missed from the stream, whose entries carry the same link
  (field ``v``). Optional extra keys are nickname leases to release (compare-and-delete:
  only if they still hold the given member id).
* :data:`CLAIM`: take a nickname's lease (``SET NX EX``), or renew it if this member
  holds it already. Returns 1 if the member holds it now.
* :data:`REFRESH`: a node's heartbeat. Renews its alive key and the leases of its
  members (taking again any that expired or went with a restarted Redis), clears the
  "reaped" mark if other nodes had declared it gone, and returns which leases another
  member holds now.
* :data:`REAP`: a node whose alive key is gone is declared gone, once: the first node to
  run this for it publishes the notice (through the same stream and channel as
  :data:`PUBLISH`); every other run returns 0.
"""

from __future__ import annotations

import hashlib

_PUBLISH_BODY = """
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if top[1] then prev = top[1][1] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'p', ARGV[2], 'v', prev)
redis.call('SPUBLISH', ARGV[1], id .. ' ' .. prev .. ' ' .. ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
"""

PUBLISH = (
    _PUBLISH_BODY
    + """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[3 + i] then redis.call('DEL', KEYS[i]) end
end
return id
"""
)

CLAIM = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""

REFRESH = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local reaped = redis.call('DEL', KEYS[2])
local lost = {}
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == false or v == ARGV[i] then
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[2])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return {reaped, lost}
"""

REAP = (
    """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', 3600) then return 0 end
"""
    + _PUBLISH_BODY
    + """
return 1
"""
)


def sha(script: str) -> str:
    """The SHA1 ``EVALSHA`` names ``script`` by."""
    return hashlib.sha1(script.encode()).hexdigest()


ALL = (PUBLISH, CLAIM, REFRESH, REAP)
