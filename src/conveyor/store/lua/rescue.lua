-- Find leases to treat as lost, and promote due scheduled jobs in every queue.
-- ARGV: prefix, now|"", owner ("="..owner | "" for every expired lease), limit.
-- Returns {now, then per lease: id, lease_token, attempt, max_attempts, backoff_s,
--   cancel_requested}: what Python needs to settle them as lost (rules.decide) right away.
local now, nowstr = clock(ARGV[2])
local limit = tonumber(ARGV[4])
local owner = nil
if ARGV[3] ~= '' then owner = string.sub(ARGV[3], 2) end
local ids
if owner then
  ids = redis.call('ZRANGE', K_LEASES, 0, -1)
else
  ids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. nowstr, 'LIMIT', 0, limit)
end
local out = {nowstr}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_job(id), 'state', 'lease_owner', 'lease_token', 'attempt',
    'max_attempts', 'backoff_s', 'cancel_requested')
  if f[1] == 'running' and (owner == nil or f[2] == owner) then
    out[#out + 1] = id
    for j = 3, 7 do out[#out + 1] = f[j] end
  end
end
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  if promote(queue, now, nowstr, limit) > 0 then wake(queue) end
end
finish()
return out
