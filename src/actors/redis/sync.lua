-- shardgate: one node's exchange with the shared ledger, atomic (src/actors/redis/mod.rs).
--
-- A meter's window is the hash <prefix>w:<meter>: s (start, ms), e (end, ms, exclusive),
-- u (units used), o:<holder> (units on lease to a holder: "<node>.<shard>"), r:<holder>
-- (units that holder gave back in the window). The same rules as budget::ledger::Ledger:
-- used + sum(out) <= max, grants shrink to available / (2 * holders), at least 1.
--
-- ARGV: prefix, now, batch id ("" when no reports or spend), #reports, #spend, #asks, this
-- node's name for this start ("<node>~<boot>", kept alive 10 s by every call), then
--   reports: meter, window start, holder, used, over, returned          (6 each)
--   spend:   day (yyyymmdd), scope, nano_usd, input, output, requests   (6 each)
--   asks:    meter, holder, units, max, holders, start, end, expire_at  (8 each; start and
--            end open the window if the meter has none or it ended; expire_at "0": never)
-- A batch id already applied skips the reports and spend (a retry after a timeout whose
-- first try went through); asks are never retried and always answered.
-- Returns {reported, answers}: per report, the units used in its window after it (-1 when
-- its window is over); per ask, an array: units, window start, window end, remaining,
-- others' out, returned, (when nothing was granted) the holders with units out,
-- comma-separated, and the units used in the window.

local prefix = ARGV[1]
local now = tonumber(ARGV[2])
local batch = ARGV[3]
local nr, ns, na = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local i = 8

-- A node that has not called for 10 s (stopped, crashed, cut off) holds nothing: its units
-- out are dropped when next seen, so a dead node never keeps a limit's units (a concurrency
-- limit's above all, whose window never ends).
redis.call('SET', prefix .. 'alive:' .. ARGV[7], '1', 'PX', 10000)
local alive = {}
local function is_alive(holder)
  local node = string.match(holder, '^(.*)%.%d+$') or holder
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', prefix .. 'alive:' .. node) == 1
  end
  return alive[node]
end

local apply = true
if batch ~= '' then
  apply = redis.call('SET', prefix .. 'done:' .. batch, '1', 'NX', 'PX', 86400000) ~= false
end

local reported = {}
for r = 1, nr do
  local key, h = prefix .. 'w:' .. ARGV[i], ARGV[i + 2]
  local used, over, ret = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local w = redis.call('HMGET', key, 's', 'e', 'o:' .. h, 'u')
  reported[r] = -1
  if w[1] == ARGV[i + 1] and now < tonumber(w[2]) then
    reported[r] = tonumber(w[4] or '0')
    if apply then
      local back = math.max(used - over, 0) + ret
      local out = math.max(tonumber(w[3] or '0') - back, 0)
      redis.call('HSET', key, 'o:' .. h, out)
      if ret > 0 then redis.call('HINCRBY', key, 'r:' .. h, ARGV[i + 5]) end
      if used > 0 then reported[r] = redis.call('HINCRBY', key, 'u', ARGV[i + 3]) end
    end
  end
  i = i + 6
end

for _ = 1, ns do
  if apply then
    local key, f = prefix .. 'spend:' .. ARGV[i], ARGV[i + 1]
    redis.call('SADD', prefix .. 'spend:days', ARGV[i])
    redis.call('HINCRBY', key, f .. '|n', ARGV[i + 2])
    redis.call('HINCRBY', key, f .. '|i', ARGV[i + 3])
    redis.call('HINCRBY', key, f .. '|o', ARGV[i + 4])
    redis.call('HINCRBY', key, f .. '|r', ARGV[i + 5])
  end
  i = i + 6
end

local answers = {}
for a = 1, na do
  local key, h = prefix .. 'w:' .. ARGV[i], ARGV[i + 1]
  local ask, max, holders = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  local e = redis.call('HGET', key, 'e')
  if (not e) or now >= tonumber(e) then
    redis.call('DEL', key)
    redis.call('HSET', key, 's', ARGV[i + 5], 'e', ARGV[i + 6], 'u', 0)
    if ARGV[i + 7] ~= '0' then redis.call('PEXPIREAT', key, ARGV[i + 7]) end
  end
  i = i + 8
  local f = redis.call('HGETALL', key)
  local used, out, mine, returned, s, stop = 0, 0, 0, 0, '0', '0'
  local others = {}
  for j = 1, #f, 2 do
    local name, v = f[j], f[j + 1]
    if name == 'u' then
      used = tonumber(v)
    elseif name == 's' then
      s = v
    elseif name == 'e' then
      stop = v
    elseif string.sub(name, 1, 2) == 'o:' then
      local n = tonumber(v)
      local who = string.sub(name, 3)
      if not is_alive(who) then
        redis.call('HDEL', key, name, 'r:' .. who)
      else
        out = out + n
        if who == h then
          mine = n
        elseif n > 0 then
          others[#others + 1] = who
        end
      end
    elseif name == 'r:' .. h then
      returned = tonumber(v)
    end
  end
  local avail = math.max(max - used - out, 0)
  local share = math.max(math.floor(avail / (2 * math.max(holders, 1))), 1)
  local units = math.min(ask, avail, share)
  if units > 0 then
    redis.call('HSET', key, 'o:' .. h, mine + units)
    others = {}
  end
  answers[a] = {units, s, stop, avail - units, out - mine, returned, table.concat(others, ','), used}
end
return {reported, answers}
