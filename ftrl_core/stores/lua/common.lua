-- Shared prelude of the flush scripts (prepended to each of them when loaded).
-- ARGV[1] key prefix, ARGV[2] flush id ('' for a read-only call), ARGV[3] flush-id TTL (s),
-- ARGV[4] / ARGV[5] base / current global counters (packed little-endian doubles, '' on
-- every shard but shard 0).
-- KEYS: the call's flush-id key and pause key. The script builds its key names from ARGV[1];
-- the keys are declared so that a Redis Cluster node checks the slot before the script runs
-- (MOVED, ASK or TRYAGAIN instead of a script half run on a slot being migrated).
-- A flush id is recorded (SET NX EX) in the same atomic call that applies the deltas: a
-- retried flush whose first attempt was applied finds its id and is answered with the
-- current values instead of being applied again.
local prefix = ARGV[1]
local flush_id = ARGV[2]
local fresh = false
if flush_id ~= '' then
  if redis.call('EXISTS', prefix .. 'pause') == 1 then
    return {'paused'}
  end
  fresh = redis.call('SET', prefix .. 'f:' .. flush_id, '1', 'NX', 'EX', ARGV[3]) ~= false
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
