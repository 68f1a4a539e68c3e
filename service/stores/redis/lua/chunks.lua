-- Hashed mode: dense chunk strings of 65,536 slots, each slot ARGV[7] signed 64-bit
-- fixed-point columns (big-endian, BITFIELD's bit order). ARGV[8..]: groups of
-- [chunk id][op 'w' or 'r'][n] then n BITFIELD sub-command arguments (INCRBY i64 #o d for
-- writes, GET i64 #o for reads). Integer additions are exact and commute: workers' deltas
-- merge to the same value in any order. A repeated flush turns its INCRBYs into GETs.
-- Reply: {status, counters, one BITFIELD reply per group}.
local out = {}
local i = 8
while i <= #ARGV do
  local key = prefix .. 'c:' .. ARGV[i]
  local op = ARGV[i + 1]
  local n = tonumber(ARGV[i + 2])
  local first = i + 3
  local last = i + 2 + n
  if op == 'r' then
    out[#out + 1] = redis.call('BITFIELD_RO', key, unpack(ARGV, first, last))
  elseif fresh then
    out[#out + 1] = redis.call('BITFIELD', key, 'OVERFLOW', 'SAT', unpack(ARGV, first, last))
  else
    local gets = {}
    for j = first, last, 4 do
      gets[#gets + 1] = 'GET'
      gets[#gets + 1] = ARGV[j + 1]
      gets[#gets + 1] = ARGV[j + 2]
    end
    out[#out + 1] = redis.call('BITFIELD_RO', key, unpack(gets))
  end
  i = last + 1
end
return {status, counters, out}
