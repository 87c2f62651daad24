-- Extend leases whose token matches; record progress and log lines as events.
-- ARGV: prefix, now|"", lease_s, count, then per beat: id, token, progress JSON|"",
--   number of log lines, log event data JSON...
-- Returns per beat "ok" | "cancel" | "lost".
local now, nowstr = clock(ARGV[2])
local expires = fmt(now + tonumber(ARGV[3]))
local n = tonumber(ARGV[4])
local out = {}
local i = 5
for b = 1, n do
  local id, token, progress, nlogs = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'state', 'lease_token', 'cancel_requested')
  if f[1] ~= 'running' or f[2] ~= token then
    out[b] = 'lost'
  else
    later(K_LEASES, id, expires)
    if progress ~= '' then
      redis.call('HSET', jk, 'lease_expires_at', expires, 'updated_at', nowstr,
        'progress', progress)
      event(id, nowstr, 'progress', progress)
    else
      redis.call('HSET', jk, 'lease_expires_at', expires, 'updated_at', nowstr)
    end
    for l = 0, nlogs - 1 do event(id, nowstr, 'log', ARGV[i + l]) end
    if f[3] == '1' then out[b] = 'cancel' else out[b] = 'ok' end
  end
  i = i + nlogs
end
finish()
return out
