-- Shared prelude of the flush scripts (prepended to each of them when loaded).
-- ARGV[1] key prefix, ARGV[2] flush id '<worker>:<seq>' ('' for a read-only call),
-- ARGV[3] TTL (s) of the worker's applied-sequence key, ARGV[4] / ARGV[5] base / current
-- global counters (packed little-endian doubles, '' on every shard but shard 0), ARGV[6]
-- the idempotency keys whose requests this flush carries (shard 0 only; see below). The
-- layout's arguments follow from ARGV[7].
-- KEYS: the worker's applied-sequence key and the pause key. The script builds its key
-- names from ARGV[1]; the keys are declared so that a Redis Cluster node checks the slot
-- before the script runs (MOVED, ASK or TRYAGAIN instead of a script half run on a slot
-- being migrated).
-- A worker's flushes carry growing sequences, one flush at a time: a flush whose sequence
-- is not above the last one applied here for its worker (w:<worker>, set in the same atomic
-- call that applies the deltas) was applied before (a resend after a lost reply, or after
-- the worker's restart) and is answered with the current values instead.
local prefix = ARGV[1]
local flush_id = ARGV[2]
local fresh = false
if flush_id ~= '' then
  if redis.call('EXISTS', prefix .. 'pause') == 1 then
    return {'paused'}
  end
  local sep = string.find(flush_id, ':', 1, true)
  local seq = tonumber(string.sub(flush_id, sep + 1))
  local wkey = prefix .. 'w:' .. string.sub(flush_id, 1, sep - 1)
  fresh = seq > tonumber(redis.call('GET', wkey) or '0')
  if fresh then
    redis.call('SET', wkey, seq, 'EX', ARGV[3])
  else
    redis.call('EXPIRE', wkey, ARGV[3])
  end
end
local status = 'read'
if flush_id ~= '' then
  status = fresh and 'applied' or 'repeat'
end

-- compare-and-add on packed doubles: the shared value equal to the base means nobody else
-- wrote it since this worker read it, so the current value is stored as is (exact);
-- otherwise the delta (current - base) is added
local function merge_counters(key, base, cur)
  if cur == '' then
    return ''
  end
  local out = {}
  local zero = string.rep('\0', 8)
  for i = 1, #cur / 8 do
    local f = tostring(i)
    local old = redis.call('HGET', key, f) or zero
    local new = old
    if fresh then
      local b = string.sub(base, 8 * i - 7, 8 * i)
      local c = string.sub(cur, 8 * i - 7, 8 * i)
      if old == b then
        new = c
      else
        new = struct.pack('<d', struct.unpack('<d', old)
          + (struct.unpack('<d', c) - struct.unpack('<d', b)))
      end
      if new ~= old then
        redis.call('HSET', key, f, new)
      end
    end
    out[i] = new
  end
  return table.concat(out)
end

local counters = merge_counters(prefix .. 't', ARGV[4], ARGV[5])

-- The answers of the idempotency keys this flush carries (ARGV[6]): groups of
-- [u16 key length][key][u32 answer length][answer], each stored as i:<key> with its TTL
-- (the first 4 bytes of ARGV[6]), replacing the 'pending' claim its request made.
if fresh and ARGV[6] ~= '' then
  local blob = ARGV[6]
  local ttl = struct.unpack('<I4', blob, 1)
  local p = 5
  while p <= #blob do
    local klen = struct.unpack('<I2', blob, p)
    local key = string.sub(blob, p + 2, p + 1 + klen)
    local alen = struct.unpack('<I4', blob, p + 2 + klen)
    local q = p + 6 + klen
    redis.call('SET', prefix .. 'i:' .. key, string.sub(blob, q, q + alen - 1), 'EX', ttl)
    p = q + alen
  end
end
