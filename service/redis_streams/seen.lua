-- The dedupe window of a stream consumer group: event key -> the flush that carries it.
-- Records live in one hash per time bucket (<prefix><bucket>, bucket = floor(now / W), the
-- server's clock); a lookup reads the current and the previous bucket, so a record is found
-- from W to 2W ms after it was written, and a bucket's key expires when the next one ends.
-- A record is '<flush id> <ms written>'.
-- ARGV[1] prefix, ARGV[2] W (ms), ARGV[3] mode, ARGV[4] this consumer's next flush id,
-- ARGV[5...] the keys (check, release) or key, expected record pairs (take).
--   check: per key, the record found; none: writes '<flush id> <now>' and answers false
--   take: per pair, 1 after replacing the record if it still is the expected one, else 0
--         (of two consumers taking over one stale record, one wins)
--   release: deletes the keys whose record names this flush id (events not learned)
-- Reply: {now (ms), one answer per key or pair}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = ARGV[1]
local w = tonumber(ARGV[2])
local mode = ARGV[3]
local mine = ARGV[4]
local bucket = math.floor(now / w)
-- '%.0f': integers past 1e14 would be printed in exponent form by tostring
local cur = prefix .. string.format('%.0f', bucket)
local prev = prefix .. string.format('%.0f', bucket - 1)
local stamp = mine .. ' ' .. string.format('%.0f', now)
local out = {string.format('%.0f', now)}

local function find(key)
  local v = redis.call('HGET', cur, key)
  if v then
    return v, cur
  end
  v = redis.call('HGET', prev, key)
  if v then
    return v, prev
  end
  return false, nil
end

local wrote = false
if mode == 'check' then
  for i = 5, #ARGV do
    local v = find(ARGV[i])
    if not v then
      redis.call('HSET', cur, ARGV[i], stamp)
      wrote = true
    end
    out[#out + 1] = v
  end
elseif mode == 'take' then
  for i = 5, #ARGV, 2 do
    local v = find(ARGV[i])
    if v == ARGV[i + 1] then
      redis.call('HSET', cur, ARGV[i], stamp)
      wrote = true
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
elseif mode == 'release' then
  local own = mine .. ' '
  for i = 5, #ARGV do
    local v, where = find(ARGV[i])
    if v and string.sub(v, 1, #own) == own then
      redis.call('HDEL', where, ARGV[i])
    end
  end
else
  return redis.error_reply('unknown mode ' .. mode)
end
if wrote then
  redis.call('PEXPIREAT', cur, string.format('%.0f', (bucket + 2) * w))
end
return out
