-- Cancel up to `limit` waiting (queued or scheduled) jobs of a queue, reason "purged".
-- ARGV: prefix, now|"", queue, limit, error JSON. Returns how many (Python calls again while
-- a call cancels `limit`: one call never blocks Redis for long).
local now, nowstr = clock(ARGV[2])
local queue, limit, err = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local data = '{"state":"cancelled","reason":"purged"}'
local done = 0
for _, member in ipairs(redis.call('ZRANGE', k_ready(queue), 0, limit - 1)) do
  if cancel_waiting(string.sub(member, 18), nowstr, data, err) then done = done + 1 end
end
if done < limit then
  for _, id in ipairs(redis.call('ZRANGE', k_sched(queue), 0, limit - done - 1)) do
    if cancel_waiting(id, nowstr, data, err) then done = done + 1 end
  end
end
finish()
return done
