-- One bounded slice of eviction on one shard (bucket layout). Run by any worker, from its
-- sweep timer (``sweep.py``); every call does a bounded amount of work, so the shard serves
-- other clients between two calls (a script blocks a Redis server while it runs).
-- KEYS[1]: the shard's live count (<prefix>n), KEYS[2]: its pause key (<prefix>pause), both
-- declared so that a Redis Cluster node checks the slot before the script runs: a slot
-- group being migrated answers ASK then TRYAGAIN (``pause`` does not exist), so no sweep
-- runs on a slot whose keys are split between two masters (as the flush, ``common.lua``).
-- ARGV[1] key prefix, ARGV[2] now, ARGV[3] --evict-idle (0: no idle pass), ARGV[4] the
-- model's buckets, ARGV[5] shards, ARGV[6] this shard's index, ARGV[7] the idle pass's
-- budget of coordinates (whole buckets: it stops at the first bucket end past it),
-- ARGV[8] this shard's share of --max-coordinates (0: none), ARGV[9] buckets to sample
-- for the cap (packed u32, chosen at random by the worker: a script's math.random is
-- seeded alike on every call).
-- The idle pass walks this shard's buckets from a cursor kept on the shard (<prefix>sweep,
-- an index among the buckets b with b % shards == shard), so calls from several workers
-- share one pass instead of each repeating it. A coordinate with no age yet (seeded by
-- load-state) is stamped now: it gets a full idle window from the first sweep that sees it.
-- The cap: while the shard holds more than its share, the coordinates of the sampled
-- buckets form a pool (about 100 per bucket) and the oldest eighth of it is dropped: Redis's
-- approximate LRU (sample, evict the oldest of the sample) with a pool of a few hundred.
-- While a snapshot pauses the shard (``pause`` set, ``bulk.snapshot``) nothing is dropped
-- nor stamped, so the snapshot's coordinates and ages are read at one point in time.
-- Reply: {cursor after the call (0: a pass ended; -1: paused, nothing done), live after the
-- call, dropped keys (8 bytes each)}.
local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local nbuckets = tonumber(ARGV[4])
local shards = tonumber(ARGV[5])
local shard = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local cap = tonumber(ARGV[8])
local samples = ARGV[9]
local call = redis.call
local live = tonumber(call('GET', KEYS[1]) or '0')
if call('EXISTS', KEYS[2]) == 1 then
  return {-1, live, ''}
end
local out = {}

local function drop(bucket, f)
  call('HDEL', prefix .. 'a:' .. bucket, f)
  if call('HDEL', prefix .. 'b:' .. bucket, f) == 1 then
    live = live - 1
    out[#out + 1] = f
  end
end

local cursor = 0
if idle > 0 then
  local ckey = prefix .. 'sweep'
  cursor = tonumber(call('GET', ckey) or '0')
  local owned = math.floor((nbuckets - 1 - shard) / shards) + 1
  if cursor >= owned then
    cursor = 0
  end
  local seen = 0
  while seen < budget do
    local bucket = shard + cursor * shards
    local fields = call('HKEYS', prefix .. 'b:' .. bucket)
    if #fields > 0 then
      local akey = prefix .. 'a:' .. bucket
      local ages = {}
      for first = 1, #fields, 1000 do  -- unpack's stack is limited: HMGET in pieces
        local part = call('HMGET', akey, unpack(fields, first, math.min(first + 999, #fields)))
        for j = 1, #part do
          ages[first + j - 1] = part[j]
        end
      end
      for i = 1, #fields do
        local age = ages[i]
        if not age then
          call('HSET', akey, fields[i], ARGV[2])
        elseif now - tonumber(age) > idle then
          drop(bucket, fields[i])
        end
      end
      seen = seen + #fields
    end
    seen = seen + 1  -- an empty bucket costs a lookup too
    cursor = cursor + 1
    if cursor >= owned then
      cursor = 0
      break
    end
  end
  call('SET', ckey, cursor)
end

if cap > 0 and live > cap and samples ~= '' then
  local pool = {}
  for i = 1, #samples / 4 do
    local bucket = struct.unpack('<I4', samples, 4 * i - 3)
    local flat = call('HGETALL', prefix .. 'a:' .. bucket)
    for j = 1, #flat, 2 do
      pool[#pool + 1] = {tonumber(flat[j + 1]), bucket, flat[j]}
    end
  end
  table.sort(pool, function(x, y) return x[1] < y[1] end)
  local n = math.min(live - cap, math.max(1, math.floor(#pool / 8)), #pool)
  for i = 1, n do
    drop(pool[i][2], pool[i][3])
  end
end

if live < 0 then
  live = 0
end
call('SET', KEYS[1], live)
return {cursor, live, table.concat(out)}
