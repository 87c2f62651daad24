-- Read what settling needs about many jobs in one call, with the store's time.
-- ARGV: prefix, now|"", ids... Returns {now, then per id: lease_token, attempt, max_attempts,
--   backoff_s, cancel_requested} (false for a job that is not running).
local now, nowstr = clock(ARGV[2])
local out = {nowstr}
for i = 3, #ARGV do
  local f = redis.call('HMGET', k_job(ARGV[i]), 'state', 'lease_token', 'attempt',
    'max_attempts', 'backoff_s', 'cancel_requested')
  local running = f[1] == 'running' and f[2]
  for j = 2, 6 do
    if running then out[#out + 1] = f[j] else out[#out + 1] = false end
  end
end
return out
