-- Find leases to treat as lost, and promote due scheduled jobs in every queue.
-- ARGV: prefix, now|"", owner ("="..owner | "" for every expired lease), limit.
-- Returns {now, id1, token1, id2, token2, ...}; Python settles them as lost (rules.decide).
local now, nowstr = clock(ARGV[2])
local limit = tonumber(ARGV[4])
local ids
if ARGV[3] == '' then
  ids = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. nowstr, 'LIMIT', 0, limit)
else
  local owner = string.sub(ARGV[3], 2)
  ids = {}
  for _, id in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
    if redis.call('HGET', k_job(id), 'lease_owner') == owner then ids[#ids + 1] = id end
  end
end
local out = {nowstr}
for _, id in ipairs(ids) do
  local token = redis.call('HGET', k_job(id), 'lease_token')
  if token then
    out[#out + 1] = id
    out[#out + 1] = token
  end
end
local woke = {}
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  if promote(queue, now, nowstr, limit) > 0 then woke[queue] = true end
end
wake(woke)
return out
