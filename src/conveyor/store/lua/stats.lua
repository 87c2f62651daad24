-- Per-queue counts, age of the oldest due waiting job, jobs finished in the last minute.
-- ARGV: prefix, now|"". Returns {now, then per queue: name, counts HGETALL JSON, oldest|"",
--   finished last minute}.
local now, nowstr = clock(ARGV[2])
local out = {nowstr}
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  -- The ready set is ordered by priority first: its oldest run_at is the oldest of the first
  -- members of each priority group.
  local oldest = nil
  local rk = k_ready(queue)
  local first = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  while #first > 0 do
    local run_at = tonumber(string.sub(first[1], 1, 16)) / 1000000
    if run_at <= now and (oldest == nil or run_at < oldest) then oldest = run_at end
    first = redis.call('ZRANGEBYSCORE', rk, '(' .. first[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
  local due = redis.call('ZRANGEBYSCORE', k_sched(queue), '-inf', nowstr, 'WITHSCORES', 'LIMIT', 0, 1)
  if #due > 0 and (oldest == nil or tonumber(due[2]) < oldest) then oldest = tonumber(due[2]) end
  out[#out + 1] = queue
  out[#out + 1] = cjson.encode(redis.call('HGETALL', k_counts(queue)))
  if oldest then out[#out + 1] = fmt(oldest) else out[#out + 1] = '' end
  out[#out + 1] = tostring(redis.call('ZCOUNT', k_done(queue), '(' .. fmt(now - 60), '+inf'))
end
return out
