-- Insert a batch of jobs atomically.
-- ARGV: prefix, now|"", idempotency window (s), count, then per job 13 fields:
--   id, kind, queue, input, priority, run_at, max_attempts, timeout_s|"", backoff_s, tags,
--   idempotency key ("k:"..key | ""), request hash ("h:"..hash | ""), webhook|""
-- Returns {now, per job: "queued" | "scheduled" (inserted) | "=<id>" (already known)}, or
-- {"conflict", key, job_id} with nothing written when a key was used with another request.
local now, nowstr = clock(ARGV[2])
local window = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local W = 13
local out = {nowstr}

-- Pass 1, read only: known ids (a retried call) and live idempotency keys.
for i = 0, n - 1 do
  local b = 5 + i * W
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
  local hook = ''  -- the data of base.created_event
  if ARGV[b + 12] ~= '' then hook = ',"webhook":true' end
  local seq = event(id, nowstr, 'state', '{"state":"' .. state .. '","queue":'
    .. cjson.encode(queue) .. hook .. '}')
  redis.call('HSET', jk, 'id', id, 'kind', ARGV[b + 1], 'queue', queue, 'state', state,
    'input', ARGV[b + 3], 'priority', priority, 'run_at', run_at, 'attempt', '0',
    'max_attempts', ARGV[b + 6], 'backoff_s', ARGV[b + 8], 'tags', ARGV[b + 9],
    'cancel_requested', '0', 'created_at', nowstr, 'updated_at', nowstr, 'seqs', seq)
  if ARGV[b + 7] ~= '' then redis.call('HSET', jk, 'timeout_s', ARGV[b + 7]) end
  if ARGV[b + 12] ~= '' then redis.call('HSET', jk, 'webhook', ARGV[b + 12]) end
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
  if state == 'queued' then
    make_ready(id, queue, priority, run_at)
  else
    redis.call('ZADD', k_sched(queue), run_at, id)
  end
  wake(queue)
  count(queue, ARGV[b + 1], state, 1, id)
  return state
end

for i = 0, n - 1 do
  if not out[i + 2] then out[i + 2] = insert(5 + i * W) end
end
for queue in pairs(queues) do redis.call('SADD', K_QUEUES, queue) end
finish()
return out
