-- Exact 64-bit keys: coordinates bucketed into small hashes (listpack encoded), field = the
-- 8-byte key, value = the packed state record (struct format ARGV[7], ARGV[8] columns,
-- ARGV[6] bytes).
-- ARGV[9]: writes, groups of [bucket u32][count u32] then count x [key 8][base W][cur W].
-- ARGV[10]: reads, groups of [bucket u32][count u32] then count x [key 8].
-- Reply: {status, counters, merged records of the writes then the reads, W bytes each}.
local width = tonumber(ARGV[6])
local fmt = ARGV[7]
local ncols = tonumber(ARGV[8])
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
local call, sub, unpack_ = redis.call, string.sub, struct.unpack
local n = 0
local blob = ARGV[9]
local p = 1
local last = #blob
local w2 = 2 * width
while p <= last do
  local bucket, count = unpack_('<I4I4', blob, p)
  p = p + 8
  local key = prefix .. 'b:' .. bucket
  for _ = 1, count do
    local f = sub(blob, p, p + 7)
    local old = call('HGET', key, f) or zero
    local new = old
    if fresh then
      local b = sub(blob, p + 8, p + 7 + width)
      if old == b then
        new = sub(blob, p + 8 + width, p + 7 + w2)
      else
        new = add(old, b, sub(blob, p + 8 + width, p + 7 + w2))
      end
      if new ~= old then
        call('HSET', key, f, new)
      end
    end
    p = p + 8 + w2
    n = n + 1
    out[n] = new
  end
end

blob = ARGV[10]
p = 1
last = #blob
while p <= last do
  local bucket, count = unpack_('<I4I4', blob, p)
  p = p + 8
  local key = prefix .. 'b:' .. bucket
  for _ = 1, count do
    n = n + 1
    out[n] = call('HGET', key, sub(blob, p, p + 7)) or zero
    p = p + 8
  end
end
return {status, counters, table.concat(out)}
