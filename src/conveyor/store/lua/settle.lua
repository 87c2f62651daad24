-- Apply settlements decided in Python (store/rules.py), each fenced by its lease token.
-- ARGV: prefix, now|"" (the time the decisions were made at), count, then per settlement 11
--   fields: id, token, cancel_requested the decision assumed ("0"|"1"|"*" any), new state,
--   run_at|"", attempt|"" (unchanged), result ("="..JSON | ""), error JSON|"", finished "1"|"0",
--   reset progress "1"|"0", state event data JSON|"" ({"state":..., "attempt": attempt}).
-- Returns per item "ok" | "stale" (token no longer current: nothing changed) | "retry" (a cancel
-- was requested since the decision was made: decide again).
local now, nowstr = clock(ARGV[2])
local n = tonumber(ARGV[3])
local W = 11
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * W
  local id, token = ARGV[b], ARGV[b + 1]
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'state', 'lease_token', 'cancel_requested', 'queue',
    'run_at', 'priority', 'attempt', 'seqs', 'kind', 'concurrency_key')
  local assumed = ARGV[b + 2]
  if f[1] ~= 'running' or f[2] ~= token then
    out[i + 1] = 'stale'
  elseif assumed ~= '*' and f[3] ~= assumed then
    out[i + 1] = 'retry'
  else
    local queue, state = f[4], ARGV[b + 3]
    local run_at = f[5]
    if ARGV[b + 4] ~= '' then run_at = ARGV[b + 4] end
    local attempt = ARGV[b + 5]
    if attempt == '' then attempt = f[7] end
    local data = ARGV[b + 10]
    if data == '' then data = '{"state":"' .. state .. '","attempt":' .. attempt .. '}' end
    later(K_LEASES, id, false)
    local seq = event(id, nowstr, 'state', data)
    -- one HSET; cleared fields become "" (read as None), which saves an HDEL per job
    local set = {'state', state, 'run_at', run_at, 'attempt', attempt, 'updated_at', nowstr,
      'lease_owner', '', 'lease_token', '', 'lease_expires_at', '', 'result', '',
      'seqs', with_seq(f[8], seq)}
    local result = ARGV[b + 6]
    if result ~= '' then set[16] = string.sub(result, 2) end
    if ARGV[b + 7] ~= '' then
      set[#set + 1] = 'error'
      set[#set + 1] = ARGV[b + 7]
    end
    local finished = ARGV[b + 8] == '1'
    if finished then
      set[#set + 1] = 'finished_at'
      set[#set + 1] = nowstr
      later(k_done(queue), id, nowstr)
    end
    if ARGV[b + 9] == '1' then
      set[#set + 1] = 'progress'
      set[#set + 1] = ''
    end
    redis.call('HSET', jk, unpack(set))
    local ckey = f[10] or ''
    count(queue, f[9], 'running', -1, id, ckey)
    count(queue, f[9], state, 1, id, ckey)
    if state == 'queued' then
      later(k_ready(queue), ready_member(run_at, id), -tonumber(f[6]))
      keyed_ready(id, queue, f[6], run_at, f[9], ckey, true)
      wake(queue)
    elseif state == 'scheduled' then
      later(k_sched(queue), id, run_at)
    end
    if finished then release(id, now, nowstr) end
    out[i + 1] = 'ok'
  end
end
finish()
return out
