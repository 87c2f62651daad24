-- Lease up to n due jobs from the named queues, best first (priority DESC, run_at, id).
-- ARGV: prefix, now|"", owner, n, lease_s, kinds JSON|"", tag ("="..tag | ""), scan limit,
--   number of queues, queues..., then n fresh lease tokens.
-- Returns {now, lease expiry, then one HGETALL array per claimed job as it was before the
--   claim (redis_codec.hash_to_job applies what the claim changed)}.
local now, nowstr = clock(ARGV[2])
local owner, n, lease_s = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kinds = nil
if ARGV[6] ~= '' then
  kinds = {}
  for _, name in ipairs(cjson.decode(ARGV[6])) do kinds[name] = true end
end
local tag = nil
if ARGV[7] ~= '' then tag = string.sub(ARGV[7], 2) end
local scan_limit = tonumber(ARGV[8])
local nq = tonumber(ARGV[9])
local queues = {}
for i = 1, nq do queues[i] = ARGV[9 + i] end
local token_base = 9 + nq

-- Flow control: a paused queue gives nothing; with limits, claim_limited (flow.lua) chooses.
if redis.call('SCARD', K_PAUSED) > 0 then
  local open = {}
  for _, queue in ipairs(queues) do
    if redis.call('SISMEMBER', K_PAUSED, queue) == 0 then open[#open + 1] = queue end
  end
  queues, nq = open, #open
end
local limited = redis.call('EXISTS', K_LIMITS) == 1

-- When every kind waiting in the queues is one the worker runs (the census, k_waiting), the
-- first jobs in claim order are the ones to take: no job needs looking at first. Each claimed
-- job's kind is still checked below, so a census an older conveyor left wrong costs a
-- recount, never a job of the wrong kind.
local check_kinds = kinds ~= nil
if kinds then
  check_kinds = false
  for _, queue in ipairs(queues) do
    local census = redis.call('HGETALL', k_waiting(queue))
    for j = 1, #census, 2 do
      if not kinds[census[j]] and tonumber(census[j + 1]) > 0 then check_kinds = true end
    end
  end
end

local function matches(id)
  if not check_kinds and not tag then return true end
  local f = redis.call('HMGET', k_job(id), 'kind', 'tags')
  if check_kinds and not kinds[f[1]] then return false end
  if tag then
    for _, t in ipairs(cjson.decode(f[2])) do
      if t == tag then return true end
    end
    return false
  end
  return true
end

-- Due retries and delayed jobs join the ready sets first, so they compete by priority.
for _, queue in ipairs(queues) do promote(queue, now, nowstr, math.max(n, 1000)) end

local candidates = {}
local filtered = check_kinds or tag ~= nil
local ready_queues = queues
if limited then
  candidates = claim_limited(queues, n, kinds, tag, now)
  ready_queues = {}
end

-- With a tag carried by fewer jobs than wait in the queues (and no more than the scan
-- limit), read the tag's whole index instead of the ready sets: its waiting jobs, then
-- sorted below into the ready sets' order.
local by_tag = false
if tag and not limited then
  local waiting = 0
  for _, queue in ipairs(queues) do waiting = waiting + redis.call('ZCARD', k_ready(queue)) end
  local tagged = redis.call('ZCARD', k_tag(tag))
  by_tag = tagged < waiting and tagged <= scan_limit
end
if by_tag then
  local wanted = {}
  for _, queue in ipairs(queues) do wanted[queue] = true end
  local ids = redis.call('ZRANGE', k_tag(tag), 0, -1)
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', k_job(id), 'state', 'queue', 'kind', 'priority', 'run_at')
    if f[1] == 'queued' and wanted[f[2]] and (not kinds or kinds[f[3]]) then
      candidates[#candidates + 1] = {-tonumber(f[4]), ready_member(f[5], id), id, f[2]}
    end
  end
end

for _, queue in ipairs(by_tag and {} or ready_queues) do
  local rk = k_ready(queue)
  local found, offset = 0, 0
  local page_size = n
  if filtered then page_size = math.max(n, 200) end
  while found < n and offset < scan_limit do
    local page = redis.call('ZRANGE', rk, offset, offset + page_size - 1, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local member = page[i]
      local id = string.sub(member, 18)
      if matches(id) then
        candidates[#candidates + 1] = {tonumber(page[i + 1]), member, id, queue}
        found = found + 1
        if found >= n then break end
      end
    end
    if not filtered then break end
    offset = offset + page_size
  end
end
if not limited and (nq > 1 or by_tag) then
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end

local expires = fmt(now + lease_s)
local out = {nowstr, expires}
local claimed, recount = 0, {}
for i = 1, math.min(n, #candidates) do
  local c = candidates[i]
  local id, queue = c[3], c[4]
  local jk = k_job(id)
  local h = redis.call('HGETALL', jk)
  local attempt, seqs, kind, ckey = 0, nil, nil, ''
  for j = 1, #h, 2 do
    local field = h[j]
    if field == 'attempt' then attempt = tonumber(h[j + 1]) + 1
    elseif field == 'seqs' then seqs = h[j + 1]
    elseif field == 'kind' then kind = h[j + 1]
    elseif field == 'concurrency_key' then ckey = h[j + 1] end
  end
  if kinds and not kinds[kind] then
    recount[queue] = true  -- the census was wrong: leave the job for a worker that runs it
  else
    claimed = claimed + 1
    local seq = event(id, nowstr, 'state', '{"state":"running","attempt":' .. attempt
      .. ',"worker":' .. cjson.encode(owner) .. '}')
    redis.call('HSET', jk, 'state', 'running', 'attempt', tostring(attempt), 'lease_owner', owner,
      'lease_token', ARGV[token_base + claimed], 'lease_expires_at', expires,
      'started_at', nowstr, 'updated_at', nowstr, 'seqs', with_seq(seqs, seq))
    later(k_ready(queue), c[2], false)
    later(K_LEASES, id, expires)
    if ckey ~= '' then
      later(k_kq(queue, kind, ckey), c[2], false)
      redis.call('ZADD', k_lkeys(kind), now, ckey)  -- the key's turn moves to the back
    end
    count(queue, kind, 'queued', -1, id, ckey)
    count(queue, kind, 'running', 1, id, ckey)
    out[claimed + 2] = h  -- as it was: Python applies the HSET (redis_codec.Claim)
  end
end
finish()
for queue in pairs(recount) do recount_kinds(queue) end
return out
