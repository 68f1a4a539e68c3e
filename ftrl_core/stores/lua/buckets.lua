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

local function add(old, b, c)
  local o = {struct.unpack(fmt, old)}
  local bb = {struct.unpack(fmt, b)}
  local cc = {struct.unpack(fmt, c)}
  for i = 1, ncols do
    o[i] = o[i] + (cc[i] - bb[i])
  end
  return struct.pack(fmt, unpack(o, 1, ncols))
end

local blob = ARGV[9]
local p = 1
while p <= #blob do
  local bucket, count = struct.unpack('<I4I4', blob, p)
  p = p + 8
  local key = prefix .. 'b:' .. bucket
  for _ = 1, count do
    local f = string.sub(blob, p, p + 7)
    local old = redis.call('HGET', key, f) or zero
    local new = old
    if fresh then
      local b = string.sub(blob, p + 8, p + 7 + width)
      local c = string.sub(blob, p + 8 + width, p + 7 + 2 * width)
      if old == b then
        new = c
      else
        new = add(old, b, c)
      end
      if new ~= old then
        redis.call('HSET', key, f, new)
      end
    end
    p = p + 8 + 2 * width
    out[#out + 1] = new
  end
end

blob = ARGV[10]
p = 1
while p <= #blob do
  local bucket, count = struct.unpack('<I4I4', blob, p)
  p = p + 8
  local key = prefix .. 'b:' .. bucket
  for _ = 1, count do
    out[#out + 1] = redis.call('HGET', key, string.sub(blob, p, p + 7)) or zero
    p = p + 8
  end
end
return {status, counters, table.concat(out)}
