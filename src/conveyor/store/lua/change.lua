-- User operations on one job, applied only if its state is still the one Python decided on.
-- ARGV: prefix, now|"", op ("cancel" | "retry" | "delete"), id, expected state.
-- Returns {"missing"} | {"changed", state} | {"ok", HGETALL...} ({"ok"} after a delete).
local now, nowstr = clock(ARGV[2])
local op, id, expected = ARGV[3], ARGV[4], ARGV[5]
local jk = k_job(id)
local f = redis.call('HMGET', jk, 'state', 'queue', 'run_at', 'priority', 'seqs', 'kind',
  'concurrency_key')
if not f[1] then return {'missing'} end
if f[1] ~= expected then return {'changed', f[1]} end
local state, queue, run_at, seqs, kind, ckey = f[1], f[2], f[3], f[5], f[6], f[7] or ''

if op == 'delete' then
  delete_job(id)
  finish()
  return {'ok'}
elseif op == 'cancel' and state == 'running' then
  local seq = event(id, nowstr, 'state', '{"state":"running","cancel_requested":true}')
  redis.call('HSET', jk, 'cancel_requested', '1', 'updated_at', nowstr, 'seqs', with_seq(seqs, seq))
elseif op == 'cancel' then
  if state == 'queued' then
    unready(id, queue, run_at, kind, ckey)
  else
    redis.call('ZREM', k_sched(queue), id)
  end
  local seq = event(id, nowstr, 'state', '{"state":"cancelled"}')
  redis.call('HSET', jk, 'state', 'cancelled', 'cancel_requested', '1', 'finished_at', nowstr,
    'updated_at', nowstr, 'seqs', with_seq(seqs, seq))
  redis.call('ZADD', k_done(queue), nowstr, id)
  count(queue, kind, state, -1, id, ckey)
  count(queue, kind, 'cancelled', 1, id, ckey)
  release(id, now, nowstr)
elseif op == 'retry' then
  redis.call('ZREM', k_done(queue), id)
  redis.call('HDEL', jk, 'finished_at', 'result', 'progress')
  local seq = event(id, nowstr, 'state', '{"state":"queued","retried":true}')
  redis.call('HSET', jk, 'state', 'queued', 'attempt', '0', 'run_at', nowstr,
    'cancel_requested', '0', 'updated_at', nowstr, 'seqs', with_seq(seqs, seq))
  make_ready(id, queue, f[4], nowstr, kind, ckey)
  count(queue, kind, state, -1, id, ckey)
  count(queue, kind, 'queued', 1, id, ckey)
  wake(queue)
else
  return redis.error_reply('unknown operation ' .. op)
end
finish()
local out = redis.call('HGETALL', jk)
table.insert(out, 1, 'ok')
return out
