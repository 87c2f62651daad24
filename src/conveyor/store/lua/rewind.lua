-- Run failed or cancelled jobs again (a workflow's retry), all of them or none.
-- ARGV: prefix, now|"", then the job ids. Each gets a fresh attempt budget and is blocked on
-- its dependencies that are rewound with it or not final (rules.rewind_pending), else queued.
-- Returns {"ok"}, or with nothing written {"missing", id} | {"state", id, state}.
local now, nowstr = clock(ARGV[2])
local ids, rewound, rows = {}, {}, {}
for i = 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
  rewound[ARGV[i]] = true
end
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_job(id), 'state', 'queue', 'priority', 'seqs', 'kind',
    'concurrency_key', 'depends_on')
  if not f[1] then return {'missing', id} end
  if f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {'state', id, f[1]} end
  rows[id] = f
end
for _, id in ipairs(ids) do
  local f, jk = rows[id], k_job(id)
  local ups, seen = {}, {}
  if f[7] and f[7] ~= '' then
    for _, d in ipairs(cjson.decode(f[7])) do
      if not seen[d] then
        seen[d] = true
        local st = redis.call('HGET', k_job(d), 'state')
        if rewound[d] or (st and not FINAL[st]) then ups[#ups + 1] = d end
      end
    end
  end
  -- an edge left by a cancel while its upstream still ran is already there: kept once
  for _, up in ipairs(ups) do redis.call('SADD', k_deps(up), id) end
  local queue, ckey, state = f[2], f[6] or '', 'queued'
  if #ups > 0 then state = 'blocked' end
  redis.call('ZREM', k_done(queue), id)
  redis.call('HDEL', jk, 'finished_at', 'result', 'progress')
  local seq = event(id, nowstr, 'state', '{"state":"' .. state .. '","retried":true}')
  redis.call('HSET', jk, 'state', state, 'attempt', '0', 'run_at', nowstr, 'pending',
    tostring(#ups), 'cancel_requested', '0', 'updated_at', nowstr, 'seqs', with_seq(f[4], seq))
  count(queue, f[5], f[1], -1, id, ckey)
  count(queue, f[5], state, 1, id, ckey)
  if state == 'queued' then
    make_ready(id, queue, f[3], nowstr, f[5], ckey)
    wake(queue)
  end
end
finish()
return {'ok'}
