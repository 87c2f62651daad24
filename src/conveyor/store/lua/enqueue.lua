-- Insert a batch of jobs atomically.
-- ARGV: prefix, now|"", idempotency window (s), count, cancel error JSON (the cancel
--   strategies'), then per job 19 fields:
--   id, kind, queue, input, priority, run_at, max_attempts, timeout_s|"", backoff_s, tags,
--   idempotency key ("k:"..key | ""), request hash ("h:"..hash | ""), webhook|"",
--   concurrency key|"", unique key ("u:"..key | ""), unique scope, unique window|"",
--   schedule id|"", schedule tick|"", depends_on JSON|"", workflow id|"", step|"",
--   parent id|""
--   then, for the children of a WAIT (store protocol v2), 4 fields: the waiting job's id|"",
--   its lease token, the cancel flag the decision assumed, its continuation JSON.
-- Returns {now, per job: "queued" | "scheduled" | "blocked" | "cancelled" (inserted; cancelled
-- by its key's cancel_newest limit) | "=<id>" (already known, or the unique job it
-- duplicates)}, or with nothing written: {"conflict", key, job_id} when a key was used with
-- another request, {"missing", id} for an unknown dependency, {"stale"} when the waiting job's
-- lease is not current, {"retry"} when a cancel was requested since the decision.
local now, nowstr = clock(ARGV[2])
local window = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local cancel_error = ARGV[5]
local W = 23
local B = 6  -- the first job's first field
local out = {nowstr}

-- A WAIT: the job that spawned these children must still hold its lease (checked first).
local waiter = ARGV[B + n * W]
if waiter ~= '' then
  local f = redis.call('HMGET', k_job(waiter), 'state', 'lease_token', 'cancel_requested')
  if f[1] ~= 'running' or f[2] ~= ARGV[B + n * W + 1] then return {'stale'} end
  if f[3] ~= ARGV[B + n * W + 2] then return {'retry'} end
end

-- Pass 1, read only: known ids (a retried call) and live idempotency keys.
for i = 0, n - 1 do
  local b = B + i * W
  local id, key, rh = ARGV[b], ARGV[b + 10], ARGV[b + 11]
  if redis.call('EXISTS', k_job(id)) == 1 then
    out[i + 2] = '=' .. id
  elseif key ~= '' then
    local h = redis.call('HMGET', P .. 'idem:' .. key, 'job_id', 'request_hash', 'expires_at')
    if h[1] and tonumber(h[3]) > now and redis.call('EXISTS', k_job(h[1])) == 1 then
      if h[2] ~= rh then return {'conflict', string.sub(key, 3), h[1]} end
      out[i + 2] = '=' .. h[1]
    end
  end
end

-- Pass 1b: unique jobs. A unique key's jobs are kept newest first (uniq:<key>, by creation);
-- a spec duplicates the newest one in its scope (and window), or an earlier spec of the batch.
local UNIQUE_STATES = {
  waiting = {queued = true, scheduled = true, blocked = true},
  active = {queued = true, scheduled = true, blocked = true, running = true},
}
local function unique_find(ukey, scope, window_s)
  local uk = k_uniq(ukey)
  for _, id in ipairs(redis.call('ZREVRANGE', uk, 0, -1)) do
    local f = redis.call('HMGET', k_job(id), 'state', 'created_at')
    if not f[1] or FINAL[f[1]] then
      redis.call('ZREM', uk, id)  -- finished or gone: never a duplicate again
    elseif UNIQUE_STATES[scope][f[1]]
        and (window_s == '' or tonumber(f[2]) > now - tonumber(window_s)) then
      return id
    end
  end
  return nil
end
local first_unique = {}
for i = 0, n - 1 do
  local b = B + i * W
  local ukey = ARGV[b + 14]
  if not out[i + 2] and ukey ~= '' then
    if first_unique[ukey] then
      out[i + 2] = '=' .. first_unique[ukey]
    else
      local found = unique_find(string.sub(ukey, 3), ARGV[b + 15], ARGV[b + 16])
      if found then out[i + 2] = '=' .. found else first_unique[ukey] = ARGV[b] end
    end
  end
end

-- The cancel strategies of per-key limits, in batch order (as store/limits.py decides them):
-- the key's unfinished jobs, oldest first, as {id, running, stopping}.
local strategy_of, active = {}, {}
local function strategy(kind)
  if strategy_of[kind] == nil then
    strategy_of[kind] = false
    local raw = redis.call('HGET', K_LIMITS, 'key:' .. kind)
    if raw then
      local l = cjson.decode(raw)
      if l.strategy ~= 'queue' and type(l.max_running) == 'number' then
        strategy_of[kind] = {name = l.strategy, max = l.max_running}
      end
    end
  end
  return strategy_of[kind]
end
local LIMITED = '{"state":"cancelled","reason":"concurrency_limited"}'
-- Whether the spec at b is to be stored cancelled (its key is full under cancel_newest);
-- with cancel_in_progress, cancels or stops the key's oldest jobs first.
local function apply_strategy(b)
  local kind, ckey = ARGV[b + 1], ARGV[b + 13]
  if ckey == '' or redis.call('HLEN', K_LIMITS) == 0 then return false end
  local st = strategy(kind)
  if not st then return false end
  local group = kind .. '|' .. ckey
  if not active[group] then
    local jobs = {}
    for _, id in ipairs(redis.call('ZRANGE', k_kact(kind, ckey), 0, -1)) do
      local f = redis.call('HMGET', k_job(id), 'state', 'cancel_requested')
      if f[1] and not FINAL[f[1]] and f[1] ~= 'blocked' then
        jobs[#jobs + 1] = {id, f[1] == 'running', f[2] == '1'}
      end
    end
    active[group] = jobs
  end
  local jobs = active[group]
  if st.name == 'cancel_newest' then
    if #jobs >= st.max then return true end
  else
    local live = {}
    for _, job in ipairs(jobs) do if not job[3] then live[#live + 1] = job end end
    local k = 1
    while #live - k + 1 >= st.max do
      local oldest = live[k]
      k = k + 1
      if oldest[2] then
        oldest[3] = true
        local jk = k_job(oldest[1])
        local seq = event(oldest[1], nowstr, 'state',
          '{"state":"running","cancel_requested":true,"reason":"concurrency_limited"}')
        redis.call('HSET', jk, 'cancel_requested', '1', 'updated_at', nowstr, 'seqs',
          with_seq(redis.call('HGET', jk, 'seqs'), seq))
      else
        cancel_waiting(oldest[1], nowstr, LIMITED, cancel_error)
        for j, job in ipairs(jobs) do
          if job == oldest then table.remove(jobs, j) break end
        end
      end
    end
  end
  jobs[#jobs + 1] = {ARGV[b], false, false}
  return false
end

-- Pass 1c, read only: the dependencies each new job waits for (those not final; a job of
-- the batch counts until it ends). An unknown id writes nothing.
local alias, batch, waits = {}, {}, {}
for i = 0, n - 1 do
  local id, r = ARGV[B + i * W], out[i + 2]
  if r then alias[id] = string.sub(r, 2) else batch[id] = true end
end
for i = 0, n - 1 do
  local deps = ARGV[B + i * W + 19]
  if not out[i + 2] and deps ~= '' then
    local ups, seen = {}, {}
    for _, d in ipairs(cjson.decode(deps)) do
      d = alias[d] or d
      if not seen[d] then
        seen[d] = true
        if batch[d] then
          ups[#ups + 1] = d
        else
          local st = redis.call('HGET', k_job(d), 'state')
          if not st then return {'missing', d} end
          if not FINAL[st] then ups[#ups + 1] = d end
        end
      end
    end
    if #ups > 0 then waits[ARGV[B + i * W]] = ups end
  end
end

-- Pass 2: insert the new ones.

local inserted, queues = {}, {}

local function insert(b)
  local id, queue, priority, run_at = ARGV[b], ARGV[b + 2], ARGV[b + 4], ARGV[b + 5]
  local jk = k_job(id)
  if inserted[id] then return '=' .. id end  -- the same id twice in a batch
  inserted[id] = true
  queues[queue] = true
  -- rules.initial_state: scheduled while run_at is in the future
  local state = 'queued'
  if tonumber(run_at) > now then state = 'scheduled' end
  local ups = waits[id]
  if ups then state = 'blocked' end
  local cancelled = apply_strategy(b)
  local hook = ''  -- the data of base.created_event
  if ARGV[b + 12] ~= '' then hook = ',"webhook":true' end
  if cancelled then
    state = 'cancelled'
    hook = hook .. ',"reason":"concurrency_limited"'
  end
  local seq = event(id, nowstr, 'state', '{"state":"' .. state .. '","queue":'
    .. cjson.encode(queue) .. hook .. '}')
  redis.call('HSET', jk, 'id', id, 'kind', ARGV[b + 1], 'queue', queue, 'state', state,
    'input', ARGV[b + 3], 'priority', priority, 'run_at', run_at, 'attempt', '0',
    'max_attempts', ARGV[b + 6], 'backoff_s', ARGV[b + 8], 'tags', ARGV[b + 9],
    'cancel_requested', '0', 'created_at', nowstr, 'updated_at', nowstr, 'seqs', seq)
  if ARGV[b + 7] ~= '' then redis.call('HSET', jk, 'timeout_s', ARGV[b + 7]) end
  if ARGV[b + 12] ~= '' then redis.call('HSET', jk, 'webhook', ARGV[b + 12]) end
  local ckey = ARGV[b + 13]
  for j, field in ipairs({'concurrency_key', 'unique_key', '', '', 'schedule_id',
                          'schedule_tick'}) do
    local value = ARGV[b + 12 + j]
    if field ~= '' and value ~= '' then
      if field == 'unique_key' then value = string.sub(value, 3) end
      redis.call('HSET', jk, field, value)
    end
  end
  if ARGV[b + 14] ~= '' then
    redis.call('ZADD', k_uniq(string.sub(ARGV[b + 14], 3)), nowstr, id)
  end
  for j, field in ipairs({'depends_on', 'workflow_id', 'step', 'parent_id'}) do
    if ARGV[b + 18 + j] ~= '' then redis.call('HSET', jk, field, ARGV[b + 18 + j]) end
  end
  if ARGV[b + 20] ~= '' then redis.call('ZADD', k_wf(ARGV[b + 20]), 0, id) end
  if ARGV[b + 22] ~= '' then redis.call('ZADD', k_kids(ARGV[b + 22]), 0, id) end
  if ups and not cancelled then
    redis.call('HSET', jk, 'pending', tostring(#ups))
    for _, up in ipairs(ups) do redis.call('SADD', k_deps(up), id) end
  end
  local key = ARGV[b + 10]
  if key ~= '' then
    redis.call('HSET', jk, 'idempotency_key', string.sub(key, 3))
    local ik = P .. 'idem:' .. key
    redis.call('DEL', ik)
    redis.call('HSET', ik, 'job_id', id, 'request_hash', ARGV[b + 11],
      'expires_at', fmt(now + window))
    redis.call('EXPIRE', ik, math.ceil(window))  -- memory bound; expires_at decides validity
  end
  redis.call('ZADD', K_ALL, 0, id)
  index_tags(id, ARGV[b + 9], true)
  if cancelled then
    redis.call('HSET', jk, 'cancel_requested', '1', 'finished_at', nowstr, 'error', cancel_error)
    later(k_done(queue), id, nowstr)
  elseif state == 'queued' then
    make_ready(id, queue, priority, run_at, ARGV[b + 1], ckey)
  elseif state == 'scheduled' then
    redis.call('ZADD', k_sched(queue), run_at, id)
  end
  wake(queue)
  count(queue, ARGV[b + 1], state, 1, id, ckey)
  return state
end

for i = 0, n - 1 do
  if not out[i + 2] then out[i + 2] = insert(B + i * W) end
end
-- A job of the batch cancelled at once (its key's limit) releases those waiting for it.
for i = 0, n - 1 do
  if out[i + 2] == 'cancelled' then release(ARGV[B + i * W], now, nowstr) end
end
for queue in pairs(queues) do redis.call('SADD', K_QUEUES, queue) end

-- The WAIT: block the waiting job on its children that are not final (or queue it at once),
-- give its attempt back and end its lease (rules.decide; settle.lua does the same for others).
if waiter ~= '' then
  local jk = k_job(waiter)
  local f = redis.call('HMGET', jk, 'queue', 'priority', 'attempt', 'seqs', 'kind',
    'concurrency_key')
  local queue, ckey = f[1], f[6] or ''
  local pending = 0
  for i = 0, n - 1 do
    local r, child = out[i + 2], ARGV[B + i * W]
    if string.sub(r, 1, 1) == '=' then
      child = string.sub(r, 2)
      r = redis.call('HGET', k_job(child), 'state')
    end
    if not FINAL[r] and redis.call('SADD', k_deps(child), waiter) == 1 then
      pending = pending + 1
    end
  end
  local attempt = tostring(math.max(0, tonumber(f[3]) - 1))
  local state, data = 'blocked', '{"state":"blocked","attempt":' .. attempt .. ',"pending":'
    .. pending .. '}'
  if pending == 0 then
    state, data = 'queued', '{"state":"queued","attempt":' .. attempt .. '}'
  end
  later(K_LEASES, waiter, false)
  local seq = event(waiter, nowstr, 'state', data)
  redis.call('HSET', jk, 'state', state, 'run_at', nowstr, 'attempt', attempt,
    'updated_at', nowstr, 'lease_owner', '', 'lease_token', '', 'lease_expires_at', '',
    'progress', '', 'pending', tostring(pending), 'continuation', ARGV[B + n * W + 3],
    'seqs', with_seq(f[4], seq))
  count(queue, f[5], 'running', -1, waiter, ckey)
  count(queue, f[5], state, 1, waiter, ckey)
  if state == 'queued' then
    make_ready(waiter, queue, f[2], nowstr, f[5], ckey)
    wake(queue)
  end
end
finish()
return out
