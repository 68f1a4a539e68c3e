-- Exact 64-bit keys: coordinates bucketed into small hashes (listpack encoded), field = the
-- 8-byte key, value = the packed state record (struct format ARGV[8], ARGV[9] columns,
-- ARGV[7] bytes).
-- ARGV[10]: writes, groups of [bucket u32][count u32] then count x [key 8][base W][cur W].
-- ARGV[11]: reads, groups of [bucket u32][count u32] then count x [key 8].
-- ARGV[12]: with --evict-idle / --max-coordinates, the flush's time ("now": the worker's
-- clock in the unit of --evict-idle), '' otherwise. Then each coordinate written stamps its
-- age (a:<bucket>, field = the key, value = now) and the shard's live count (n) counts the
-- coordinates created; sweep.lua drops idle or oldest ones. A write whose base is not zero
-- to a coordinate the shard no longer holds was evicted after this worker read it: its
-- delta is dropped (it would recreate the coordinate holding a fragment of old state) and
-- the reply is the zero record, which the worker reads as "never seen". A record that
-- would be created as zero (a key the worker read but did not learn: refused by admission)
-- is not created.
-- Reply: {status, counters, merged records of the writes then the reads, W bytes each}.
local width = tonumber(ARGV[7])
local fmt = ARGV[8]
local ncols = tonumber(ARGV[9])
local zero = string.rep('\0', width)
local out = {}

-- old + (c - b) column by column, in double precision, packed back to the record's type;
-- the one- and two-column records (RDA, FTRL) without tables: it runs for every coordinate
-- another worker also wrote since this one read it
local add
if ncols == 1 then
  add = function(old, b, c)
    return struct.pack(fmt, struct.unpack(fmt, old) + (struct.unpack(fmt, c)
      - struct.unpack(fmt, b)))
  end
elseif ncols == 2 then
  add = function(old, b, c)
    local o1, o2 = struct.unpack(fmt, old)
    local b1, b2 = struct.unpack(fmt, b)
    local c1, c2 = struct.unpack(fmt, c)
    return struct.pack(fmt, o1 + (c1 - b1), o2 + (c2 - b2))
  end
else
  add = function(old, b, c)
    local o = {struct.unpack(fmt, old)}
    local bb = {struct.unpack(fmt, b)}
    local cc = {struct.unpack(fmt, c)}
    for i = 1, ncols do
      o[i] = o[i] + (cc[i] - bb[i])
    end
    return struct.pack(fmt, unpack(o, 1, ncols))
  end
end

-- locals: a global lookup per call is a measurable share of a per-coordinate loop
local call, sub, unpack_, unpack = redis.call, string.sub, struct.unpack, unpack
-- one HMGET and at most one HSET per bucket (a few coordinates each) instead of an HGET and
-- an HSET per coordinate: the per-call overhead is most of a coordinate's cost. At most
-- `most` fields per call (Lua's C stack bounds unpack)
local most = 1000
local n = 0
local blob = ARGV[10]
local p = 1
local last = #blob
local w2 = 2 * width
local now = ARGV[12] or ''
local aging = now ~= ''
local created = 0
local step = 8 + w2
while p <= last do
  local bucket, count = unpack_('<I4I4', blob, p)
  p = p + 8
  local key = prefix .. 'b:' .. bucket
  local akey = prefix .. 'a:' .. bucket
  while count > 0 do
    local m = count < most and count or most
    local fields = {}
    local q = p
    for j = 1, m do
      fields[j] = sub(blob, q, q + 7)
      q = q + step
    end
    local olds = call('HMGET', key, unpack(fields, 1, m))
    local sets = {}
    local ns = 0
    local ages = {}
    local na = 0
    for j = 1, m do
      local raw = olds[j]
      local old = raw or zero
      local new = old
      if fresh then
        local b = sub(blob, p + 8, p + 7 + width)
        if aging and not raw and b ~= zero then
          new = zero  -- evicted since this worker read it: the delta is dropped
        else
          if old == b then
            new = sub(blob, p + 8 + width, p + 7 + w2)
          else
            new = add(old, b, sub(blob, p + 8 + width, p + 7 + w2))
          end
          if new ~= old then
            sets[ns + 1] = fields[j]
            sets[ns + 2] = new
            ns = ns + 2
            if not raw then
              created = created + 1
            end
          end
          if aging and (raw or new ~= zero) then
            ages[na + 1] = fields[j]
            ages[na + 2] = now
            na = na + 2
          end
        end
      end
      p = p + step
      n = n + 1
      out[n] = new
    end
    if ns > 0 then
      call('HSET', key, unpack(sets, 1, ns))
    end
    if na > 0 then
      call('HSET', akey, unpack(ages, 1, na))
    end
    count = count - m
  end
end

if aging and created > 0 then
  call('INCRBY', prefix .. 'n', created)
end

-- The stored records of keys in the bucketed hashes (b:<bucket>): `blob` groups them by
-- bucket, [bucket u32][count u32] then count x [key 8]; one HMGET per bucket (at most 1000
-- fields a call: Lua's C stack bounds unpack). The records go to out[n + 1], ... in order,
-- `zero` for a key not stored; returns the last index written.
local function read_grouped(blob, zero, out, n)
  local p = 1
  while p <= #blob do
    local bucket, count = struct.unpack('<I4I4', blob, p)
    p = p + 8
    local key = prefix .. 'b:' .. bucket
    while count > 0 do
      local m = count < 1000 and count or 1000
      local fields = {}
      for j = 1, m do
        fields[j] = string.sub(blob, p, p + 7)
        p = p + 8
      end
      local got = redis.call('HMGET', key, unpack(fields, 1, m))
      for j = 1, m do
        n = n + 1
        out[n] = got[j] or zero
      end
      count = count - m
    end
  end
  return n
end

read_grouped(ARGV[11], zero, out, n)
return {status, counters, table.concat(out)}
