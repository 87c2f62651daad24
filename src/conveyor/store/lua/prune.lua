-- Delete up to `limit` jobs that finished before a time, with their events.
-- ARGV: prefix, now|"" (unused), finished_before, limit. Returns the deleted ids.
local before, limit = ARGV[3], tonumber(ARGV[4])
local deleted = {}
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  if #deleted >= limit then break end
  local ids = redis.call('ZRANGEBYSCORE', k_done(queue), '-inf', '(' .. before, 'LIMIT', 0,
    limit - #deleted)
  for _, id in ipairs(ids) do
    delete_job(id)
    deleted[#deleted + 1] = id
  end
end
finish()
return deleted
