"""The Lua scripts that make each store and limit operation one atomic round trip.

Owns the Redis data layout. A record is two keys: a small hash `<prefix>{<owner tag>}:r:<id>` with the
fields o (owner), p (previous id or ""), c (created_at), d ("1" when deleted) and v (visible until, unix
seconds, 0 = forever), and its payload, a string `<prefix>{<owner tag>}:b:<id>` holding
"<len(input items)>:" + input items + response. Scripts follow links through the small hashes only; the
payloads of a chain come back in one MGET, so megabytes of history never pass through Lua (measured: a
200-turn, 1.6 MB chain cost Redis ~6 ms of its single thread through Lua, ~1 ms as a walk plus an MGET).
Every key a script touches carries the caller's owner tag, so one owner's records share a Cluster hash slot
and a script may follow links it was not handed as KEYS.
Times come from Redis (TIME), so nodes with skewed clocks agree. Needs Redis >= 7.0 (EXPIRETIME) or Valkey.
"""

from __future__ import annotations

from .link import LuaScript

# KEYS[1] the record, KEYS[2] its payload. ARGV: key prefix of the owner's records, owner, previous id or
# "", created_at, payload, ttl seconds (0 = forever), expiry granularity seconds, max chain length, key
# prefix of the owner's payloads.
# A record stays visible for ttl after it is put; its ancestors are kept (not made visible) at least as
# long, so a conversation's context is whole for as long as its newest response is. Expiry times are
# rounded up to the granularity, so within one window a put touches the parent only and stops there.
PUT = LuaScript(
    """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[6])
local visible = 0
if ttl > 0 then visible = now + ttl end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'o', ARGV[2], 'p', ARGV[3], 'c', ARGV[4], 'd', '0', 'v', visible)
redis.call('SET', KEYS[2], ARGV[5])
if ttl == 0 then return 1 end
local granularity = tonumber(ARGV[7])
local keep_until = math.ceil(visible / granularity) * granularity
redis.call('EXPIREAT', KEYS[1], keep_until)
redis.call('EXPIREAT', KEYS[2], keep_until)
local prev = ARGV[3]
local steps = 0
local limit = tonumber(ARGV[8])
while prev ~= '' and steps < limit do
  local key = ARGV[1] .. prev
  local expires = redis.call('EXPIRETIME', key)
  if expires < 0 or expires >= keep_until then break end
  local link = redis.call('HMGET', key, 'o', 'p')
  if link[1] ~= ARGV[2] then break end
  redis.call('EXPIREAT', key, keep_until)
  redis.call('EXPIREAT', ARGV[9] .. prev, keep_until)
  prev = link[2] or ''
  steps = steps + 1
end
return 1
"""
)

# KEYS[1] the record, KEYS[2] its payload. ARGV: owner. The previous id, created_at and payload of a
# visible record of this owner, else nil.
GET = LuaScript(
    """
local f = redis.call('HMGET', KEYS[1], 'o', 'p', 'c', 'd', 'v')
if f[1] ~= ARGV[1] or f[4] ~= '0' then return false end
local v = tonumber(f[5])
if v > 0 and v <= tonumber(redis.call('TIME')[1]) then return false end
local payload = redis.call('GET', KEYS[2])
if not payload then return false end
return {f[2], f[3], payload}
"""
)

# KEYS[1] the record. ARGV: owner. 1 when a visible record was hidden, else 0. A deleted record stays (with
# its expiry) because the conversations built on it still need it.
DELETE = LuaScript(
    """
local f = redis.call('HMGET', KEYS[1], 'o', 'd', 'v')
if f[1] ~= ARGV[1] or f[2] ~= '0' then return 0 end
local v = tonumber(f[3])
if v > 0 and v <= tonumber(redis.call('TIME')[1]) then return 0 end
redis.call('HSET', KEYS[1], 'd', '1')
return 1
"""
)

# KEYS[1] the head record. ARGV: key prefix, owner, head id, "1" when the head must be visible, max chain
# length. Walks the previous-id links server-side, whatever the length. Returns id, p, c for each record,
# newest first, or nil when a link is missing or another owner's, or the links cycle. The payloads follow
# in one MGET: a chain is two round trips.
CHAIN = LuaScript(
    """
local out = {}
local seen = {}
local id = ARGV[3]
local key = KEYS[1]
local limit = tonumber(ARGV[5])
for step = 1, limit do
  local f = redis.call('HMGET', key, 'o', 'p', 'c', 'd', 'v')
  if f[1] ~= ARGV[2] or seen[id] then return false end
  if step == 1 and ARGV[4] == '1' then
    if f[4] ~= '0' then return false end
    local v = tonumber(f[5])
    if v > 0 and v <= tonumber(redis.call('TIME')[1]) then return false end
  end
  seen[id] = true
  out[#out + 1] = id
  out[#out + 1] = f[2]
  out[#out + 1] = f[3]
  if f[2] == '' then return out end
  id = f[2]
  key = ARGV[1] .. id
end
return false
"""
)

# KEYS[1] the key's bucket. ARGV: rate per second, burst. Takes one token; returns "0" or the seconds
# until one is there (as a string: Lua numbers become integers on the way out).
TAKE_TOKEN = LuaScript(
    """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(b[1]) or burst
local updated = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
)

# KEYS[1] the key's connection leases: a hash of lease id -> expiry (unix ms). ARGV: lease id, cap, lease ms.
# Drops expired leases (a node that died), then adds this one when the live ones are under the cap.
ACQUIRE_LEASE = LuaScript(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) else live = live + 1 end
end
if live >= tonumber(ARGV[2]) then return 0 end
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], now + lease)
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
)

# KEYS[1] the key's connection leases. ARGV: lease ms, then the lease ids this node still holds.
# The heartbeat: every held lease gets a new expiry (and is written back if it had been dropped).
REFRESH_LEASES = LuaScript(
    """
local t = redis.call('TIME')
local lease = tonumber(ARGV[1])
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + lease
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], expiry) end
redis.call('PEXPIRE', KEYS[1], lease)
return #ARGV - 1
"""
)

# KEYS[1] the key's connection leases. ARGV: the lease id to give back.
RELEASE_LEASE = LuaScript(
    """
return redis.call('HDEL', KEYS[1], ARGV[1])
"""
)
