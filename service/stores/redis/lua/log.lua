-- The delta log (deltalog.py): a flush appends its rows to the shard's log, a stream, as
-- one entry; Redis does no per-coordinate work for it. The workers merge the others'
-- entries into their caches, and a compaction (any worker, now and then) folds the log into
-- the bucketed hashes, which then hold the state as of the entry `pos`.
-- ARGV[7]: 'f' (a flush, or a read when the flush id is '') or 't' (a compaction's trim;
-- the compaction itself writes the buckets and `pos` with plain commands in a MULTI/EXEC
-- transaction: deltalog.py).
-- 'f': ARGV[8] the worker's id, ARGV[9] its cursor (the last entry it merged; '' before it
-- loaded the state: no entries are returned), ARGV[10] the rows, each [key 8][base W]
-- [cur W] ('' none). A fresh flush appends them (fields f: the flush id, d: the rows).
-- Reply: {status, counters, {id, flush id, rows, ...} of the entries after the cursor (at
-- most 64), behind}: behind is 1 when entries after the cursor were trimmed (the worker reads the
-- state again); the cursor and the time are noted in the hash `cur` (the trim spares the
-- entries a live worker has not read).
-- 't': ARGV[8] the compaction lock's token, ARGV[9] the `pos` the compaction just set,
-- ARGV[10] how long (ms) a worker's cursor counts as live. While the lock is the caller's
-- and `pos` is that: the log is trimmed up to the oldest live cursor (or `pos`), and the
-- lock released.
local op = ARGV[7]
local logkey = prefix .. 'log'

-- stream ids 'ms-seq' in order
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then
    return am < bm
  end
  return tonumber(as) < tonumber(bs)
end

-- the server's clock in ms (the cursors' liveness)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if op == 'f' then
  if fresh and ARGV[10] ~= '' then
    redis.call('XADD', logkey, '*', 'f', flush_id, 'd', ARGV[10])
  end
  local cursor = ARGV[9]
  local out = {}
  local behind = 0
  if cursor ~= '' then
    local trim = redis.call('GET', prefix .. 'trim')
    if trim and before(cursor, trim) then
      behind = 1
    else
      local n = 0
      -- at most 64 entries a reply (a worker back from a long pause gets the rest in its
      -- next calls, instead of one reply of every entry since)
      for _, e in ipairs(redis.call('XRANGE', logkey, '(' .. cursor, '+', 'COUNT', 64)) do
        out[n + 1] = e[1]
        out[n + 2] = e[2][2]
        out[n + 3] = e[2][4]
        n = n + 3
        cursor = e[1]
      end
      redis.call('HSET', prefix .. 'cur', ARGV[8], cursor .. ' ' .. now_ms())
    end
  end
  return {status, counters, out, behind}
end

-- the trim after a compaction
local lock = prefix .. 'lock'
if redis.call('GET', lock) ~= ARGV[8] or redis.call('GET', prefix .. 'pos') ~= ARGV[9] then
  return {'stale', '', {}, 0}
end

-- the trim: up to the oldest cursor of a live worker, or the new pos; a cursor not
-- renewed for ARGV[10] ms is a worker gone (it reads the state again if it comes back)
local now = now_ms()
local keep = tonumber(ARGV[10])
local minid = ARGV[9]
local curs = redis.call('HGETALL', prefix .. 'cur')
for i = 1, #curs, 2 do
  local id, at = string.match(curs[i + 1], '^(%S+) (%d+)$')
  if now - tonumber(at) > keep then
    redis.call('HDEL', prefix .. 'cur', curs[i])
  elseif before(id, minid) then
    minid = id
  end
end
local trimmed = redis.call('GET', prefix .. 'trim')
if trimmed and before(minid, trimmed) then  -- a trim point never goes back
  minid = trimmed
end
-- every entry up to minid goes (XTRIM MINID keeps the ids from its argument on)
local ms, seq = string.match(minid, '^(%d+)-(%d+)$')
redis.call('XTRIM', logkey, 'MINID', ms .. '-' .. (tonumber(seq) + 1))
redis.call('SET', prefix .. 'trim', minid)
redis.call('DEL', lock)
return {'trimmed', '', {}, 0}
