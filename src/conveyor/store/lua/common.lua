-- Shared by every conveyor script (prepended when the script is loaded).
--
-- ARGV[1] is always the key prefix (e.g. "conveyor:"); ARGV[2] is the time ("" = Redis TIME).
-- Times are epoch seconds kept as strings with microseconds ("%.6f"), so Lua's 14-digit
-- number printing never rounds them. Numbers returned to Python are strings too: Redis turns a
-- Lua number reply into an integer.
local P = ARGV[1]

local function k_job(id) return P .. 'job:' .. id end
local function k_ev(id) return P .. 'ev:' .. id end
local function k_ready(queue) return P .. 'q:' .. queue end
local function k_sched(queue) return P .. 's:' .. queue end
local function k_done(queue) return P .. 'done:' .. queue end
local function k_counts(queue) return P .. 'counts:' .. queue end
-- Per queue, kind -> how many of its jobs wait (queued or scheduled): a claim by kind needs
-- no per-job kind check when every kind waiting in the queue is one the worker runs.
local function k_waiting(queue) return P .. 'waiting:' .. queue end
-- Per tag, the ids of the jobs carrying it (all scored 0: newest first by id, like K_ALL).
local function k_tag(tag) return P .. 'tag:' .. tag end
-- Flow control (#20). Limits (target -> JSON), paused queues, token buckets, and what claims
-- under limits count: running jobs per kind and per concurrency key. Jobs with a concurrency
-- key are also kept per key: their ready members (kq, per queue, kind and key), the key's
-- unfinished job ids (kact, oldest first: ids are time-ordered), the kind's keys by when each
-- last started a job (lkeys; 0 = never) and, per queue, how many of a kind's waiting jobs have
-- a key (kwait). A kind name holds no '|'.
local K_LIMITS = P .. 'limits'
local K_PAUSED = P .. 'paused'
local K_KINDRUN = P .. 'running:kinds'
local function k_kq(queue, kind, key) return P .. 'kq:' .. queue .. '|' .. kind .. '|' .. key end
local function k_kact(kind, key) return P .. 'kact:' .. kind .. '|' .. key end
local function k_krun(kind) return P .. 'krun:' .. kind end
local function k_lkeys(kind) return P .. 'lkeys:' .. kind end
local function k_kwait(queue) return P .. 'kwait:' .. queue end
local function k_bucket(key) return P .. 'bucket:' .. key end
local function k_uniq(key) return P .. 'uniq:' .. key end
-- Blocked jobs (#19): per job, the blocked jobs waiting for it to end (the edges); a
-- workflow's jobs and a parent's children (listing, newest first by id, scored 0).
local function k_deps(id) return P .. 'deps:' .. id end
local function k_wf(id) return P .. 'wf:' .. id end
local function k_kids(id) return P .. 'kids:' .. id end
local K_LEASES = P .. 'leases'
local K_ALL = P .. 'all'
local K_FEED = P .. 'feed'
local K_SEQ = P .. 'seq'
local K_QUEUES = P .. 'queues'

-- The store's clock: the given time (tests inject one), else the Redis server's.
local function clock(arg)
  if arg ~= '' then return tonumber(arg), arg end
  local t = redis.call('TIME')
  local s = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return tonumber(s), s
end

local function fmt(x) return string.format('%.6f', x) end

-- Events are numbered as they are made and written to the store-wide feed once at the end
-- (`finish`), in a few multi-member ZADDs and one INCRBY; counter changes are summed and
-- written there too. Every script that changes anything calls finish() before returning; a
-- script never fails half-way after a write (arguments are checked first), and scripts run
-- one at a time, so reading the sequence once and adding what was used at the end is exact.
--
-- A job's own log: the sequence numbers of its state events are kept in its hash (field
-- `seqs`, written by the same HSET that changes its state, so a transition costs no extra
-- key or command), their text in the feed; progress and log events, which a job may have
-- thousands of, go to a sorted set of its own (`ev:<id>`) as well. Jobs stored by older
-- versions have every event there; reading both serves either.
local pending_events = {}
local pending_counts = {}
local pending_kinds = {}
local pending_wake = {}
local pending_hincr = {}  -- hash key -> field -> delta; fields at 0 or below are dropped
local seq_base, seq_used = nil, 0

-- Record one event; returns its sequence number (a string).
local function event(id, at, kind, data)
  if not seq_base then seq_base = tonumber(redis.call('GET', K_SEQ) or '0') end
  seq_used = seq_used + 1
  local seq = tostring(seq_base + seq_used)  -- as text once: Lua formats numbers with sprintf
  local text = '{"seq":' .. seq .. ',"job_id":' .. cjson.encode(id) .. ',"at":' .. at
    .. ',"type":"' .. kind .. '","data":' .. data .. '}'
  pending_events[#pending_events + 1] = seq
  pending_events[#pending_events + 1] = text
  if kind ~= 'state' then redis.call('ZADD', k_ev(id), seq, text) end
  return seq
end

-- A job's `seqs` field with one more state event.
local function with_seq(seqs, seq)
  if seqs == nil or seqs == false or seqs == '' then return seq end
  return seqs .. ',' .. seq
end

local function wake(queue) pending_wake[queue] = true end

-- Sorted-set updates that nothing later in the same script reads are deferred and sent as one
-- multi-member ZREM and one ZADD per key. Per member the last update wins, so the order of
-- updates within a script is kept. `score` false removes the member.
local deferred, deferred_keys = {}, {}
local function later(key, member, score)
  local d = deferred[key]
  if not d then
    d = {order = {}, ops = {}}
    deferred[key] = d
    deferred_keys[#deferred_keys + 1] = key
  end
  if d.ops[member] == nil then d.order[#d.order + 1] = member end
  d.ops[member] = score
end

local function add_to(totals, name, field, delta)
  local t = totals[name]
  if not t then
    t = {}
    totals[name] = t
  end
  t[field] = (t[field] or 0) + delta
end

-- The concurrency key of a job whose caller did not read it ('' = none).
local function key_of(id, ckey)
  if ckey ~= nil then return ckey end
  return redis.call('HGET', k_job(id), 'concurrency_key') or ''
end

local FINAL = {succeeded = true, failed = true, cancelled = true}

-- A job of `kind` (with concurrency key `ckey`, '' for none, nil: look it up) enters (delta
-- +1) or leaves (-1) `state`: per-queue counters (queue_stats reads them instead of scanning
-- jobs), the census of waiting kinds (k_waiting), running jobs per kind and per key, the
-- key's unfinished jobs, and the per-state id index (list_jobs by state, newest first).
-- Running jobs have no index of their own: they are exactly the members of K_LEASES.
local function count(queue, kind, state, delta, id, ckey)
  add_to(pending_counts, queue, state, delta)
  if state == 'queued' or state == 'scheduled' then add_to(pending_kinds, queue, kind, delta) end
  if state == 'running' then add_to(pending_hincr, K_KINDRUN, kind, delta) end
  ckey = key_of(id, ckey)
  if ckey ~= '' then
    if state == 'running' then
      add_to(pending_hincr, k_krun(kind), ckey, delta)
    elseif state == 'queued' or state == 'scheduled' then
      add_to(pending_hincr, k_kwait(queue), kind, delta)
    end
    if delta > 0 then later(k_kact(kind, ckey), id, (not FINAL[state]) and 0) end
  end
  if state == 'running' then return end
  if delta > 0 then later(P .. 'st:' .. state, id, 0) else later(P .. 'st:' .. state, id, false) end
end

-- multi-member commands in chunks: unpack() of a huge table overflows Lua's C stack
local function call_chunked(cmd, key, args, step)
  for i = 1, #args, step do
    redis.call(cmd, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

local function finish()
  for _, key in ipairs(deferred_keys) do
    local d = deferred[key]
    local gone, added = {}, {}
    for _, member in ipairs(d.order) do
      local score = d.ops[member]
      if score == false then
        gone[#gone + 1] = member
      else
        added[#added + 1] = score
        added[#added + 1] = member
      end
    end
    call_chunked('ZREM', key, gone, 400)
    call_chunked('ZADD', key, added, 400)
  end
  deferred, deferred_keys = {}, {}
  if seq_used > 0 then
    redis.call('INCRBY', K_SEQ, seq_used)
    call_chunked('ZADD', K_FEED, pending_events, 400)
    pending_events, seq_base, seq_used = {}, nil, 0
  end
  for queue, changes in pairs(pending_counts) do
    for state, delta in pairs(changes) do
      if delta ~= 0 then redis.call('HINCRBY', k_counts(queue), state, delta) end
    end
  end
  pending_counts = {}
  for queue, changes in pairs(pending_kinds) do
    for kind, delta in pairs(changes) do
      if delta ~= 0 and redis.call('HINCRBY', k_waiting(queue), kind, delta) <= 0 then
        redis.call('HDEL', k_waiting(queue), kind)
      end
    end
  end
  pending_kinds = {}
  for key, changes in pairs(pending_hincr) do
    for name, delta in pairs(changes) do
      if delta ~= 0 and redis.call('HINCRBY', key, name, delta) <= 0 then
        redis.call('HDEL', key, name)
      end
    end
  end
  pending_hincr = {}
  for queue in pairs(pending_wake) do redis.call('PUBLISH', P .. 'wake:' .. queue, '') end
  pending_wake = {}
end

-- Ready queues are sorted sets scored by -priority; equal scores sort by member, which starts
-- with the run_at in zero-padded microseconds and ends with the id: claim order is
-- priority DESC, run_at, id, exactly, with no floating-point packing of the three.
local function ready_member(run_at, id)
  return string.format('%016.0f', math.floor(tonumber(run_at) * 1000000)) .. ':' .. id
end

-- Enter a ready job in (or remove it from) its key's ready set, if it has a key. `kind` and
-- `ckey` nil: read them.
local function keyed_ready(id, queue, priority, run_at, kind, ckey, present)
  if ckey == nil then
    local f = redis.call('HMGET', k_job(id), 'kind', 'concurrency_key')
    kind, ckey = f[1], f[2] or ''
  end
  if ckey == '' then return end
  if present then
    redis.call('ZADD', k_kq(queue, kind, ckey), -tonumber(priority), ready_member(run_at, id))
    redis.call('ZADD', k_lkeys(kind), 'NX', 0, ckey)
  else
    redis.call('ZREM', k_kq(queue, kind, ckey), ready_member(run_at, id))
  end
end

local function make_ready(id, queue, priority, run_at, kind, ckey)
  redis.call('ZADD', k_ready(queue), -tonumber(priority), ready_member(run_at, id))
  keyed_ready(id, queue, priority, run_at, kind, ckey, true)
end

local function unready(id, queue, run_at, kind, ckey)
  redis.call('ZREM', k_ready(queue), ready_member(run_at, id))
  keyed_ready(id, queue, 0, run_at, kind, ckey, false)
end

-- Job `id` just became final: count down the blocked jobs waiting for it (its edges, deleted
-- now) and queue, or schedule if their run_at is ahead, those with nothing left to wait for.
-- Called in the script that makes it final, so a dependent is released exactly once.
local function release(id, now, nowstr)
  local dk = k_deps(id)
  local downs = redis.call('SMEMBERS', dk)
  if #downs == 0 then return end
  redis.call('DEL', dk)
  for _, d in ipairs(downs) do
    local jk = k_job(d)
    local f = redis.call('HMGET', jk, 'state', 'pending', 'run_at', 'queue', 'priority', 'seqs',
      'kind', 'concurrency_key')
    if f[1] == 'blocked' then
      local left = tonumber(f[2] or '1') - 1
      if left > 0 then
        redis.call('HSET', jk, 'pending', tostring(left))
      else
        local queue, ckey, state = f[4], f[8] or '', 'queued'
        local data = '{"state":"queued","released":true}'
        if tonumber(f[3]) > now then
          state = 'scheduled'
          data = '{"state":"scheduled","released":true,"run_at":' .. f[3] .. '}'
        end
        local seq = event(d, nowstr, 'state', data)
        redis.call('HSET', jk, 'state', state, 'pending', '0', 'updated_at', nowstr,
          'seqs', with_seq(f[6], seq))
        if state == 'queued' then
          make_ready(d, queue, f[5], f[3], f[7], ckey)
          wake(queue)
        else
          redis.call('ZADD', k_sched(queue), f[3], d)
        end
        count(queue, f[7], 'blocked', -1, d, ckey)
        count(queue, f[7], state, 1, d, ckey)
      end
    end
  end
end

-- Cancel a waiting (queued or scheduled) job at once, with state event `data` and error JSON
-- `err` (purge, the cancel strategies). False if it was not waiting.
local function cancel_waiting(id, nowstr, data, err)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'state', 'queue', 'run_at', 'seqs', 'kind', 'concurrency_key')
  if f[1] ~= 'queued' and f[1] ~= 'scheduled' then return false end
  local queue, ckey = f[2], f[6] or ''
  if f[1] == 'queued' then
    unready(id, queue, f[3], f[5], ckey)
  else
    redis.call('ZREM', k_sched(queue), id)
  end
  local seq = event(id, nowstr, 'state', data)
  redis.call('HSET', jk, 'state', 'cancelled', 'cancel_requested', '1', 'finished_at', nowstr,
    'updated_at', nowstr, 'error', err, 'seqs', with_seq(f[4], seq))
  later(k_done(queue), id, nowstr)
  count(queue, f[5], f[1], -1, id, ckey)
  count(queue, f[5], 'cancelled', 1, id, ckey)
  release(id, tonumber(nowstr), nowstr)
  return true
end

-- Move due scheduled jobs of one queue to its ready set (at most `limit`).
local function promote(queue, now, nowstr, limit)
  local skey = k_sched(queue)
  local ids = redis.call('ZRANGEBYSCORE', skey, '-inf', nowstr, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local jk = k_job(id)
    local f = redis.call('HMGET', jk, 'priority', 'run_at', 'seqs', 'kind', 'concurrency_key')
    local ckey = f[5] or ''
    redis.call('ZREM', skey, id)
    local seq = event(id, nowstr, 'state', '{"state":"queued"}')
    redis.call('HSET', jk, 'state', 'queued', 'updated_at', nowstr, 'seqs', with_seq(f[3], seq))
    make_ready(id, queue, f[1], f[2], f[4], ckey)
    count(queue, f[4], 'scheduled', -1, id, ckey)
    count(queue, f[4], 'queued', 1, id, ckey)
  end
  return #ids
end

-- The tags of a job from its stored JSON (none if it was damaged outside conveyor).
local function tags_of(json)
  local ok, tags = pcall(cjson.decode, json or '[]')
  if not ok or type(tags) ~= 'table' then return {} end
  return tags
end

-- Enter a job in (true) or remove it from (false) the index of each of its tags.
local function index_tags(id, json, present)
  for _, tag in ipairs(tags_of(json)) do
    if type(tag) ~= 'string' then  -- not a tag conveyor wrote: nothing to index
    elseif present then later(k_tag(tag), id, 0) else later(k_tag(tag), id, false) end
  end
end

-- Remove a finished job, its events (from its log and the feed) and its index entries.
local function delete_job(id)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'queue', 'state', 'tags', 'seqs', 'kind', 'concurrency_key',
    'unique_key', 'workflow_id', 'parent_id')
  if not f[1] then return end
  if f[8] then redis.call('ZREM', k_wf(f[8]), id) end
  if f[9] then redis.call('ZREM', k_kids(f[9]), id) end
  redis.call('ZREM', k_done(f[1]), id)
  index_tags(id, f[3], false)
  count(f[1], f[5], f[2], -1, id, f[6] or '')
  if f[7] then redis.call('ZREM', k_uniq(f[7]), id) end
  for seq in string.gmatch(f[4] or '', '%d+') do
    redis.call('ZREMRANGEBYSCORE', K_FEED, seq, seq)
  end
  call_chunked('ZREM', K_FEED, redis.call('ZRANGE', k_ev(id), 0, -1), 400)
  redis.call('DEL', k_ev(id), jk)
  redis.call('ZREM', K_ALL, id)
end

-- Count a queue's waiting jobs by kind afresh (stores written before the census, or changed
-- by an older conveyor meanwhile).
local function recount_kinds(queue)
  local census = {}
  local function tally(id)
    local kind = redis.call('HGET', k_job(id), 'kind')
    if kind then census[kind] = (census[kind] or 0) + 1 end
  end
  for _, member in ipairs(redis.call('ZRANGE', k_ready(queue), 0, -1)) do
    tally(string.sub(member, 18))  -- ready members are <run_at>:<id>
  end
  for _, id in ipairs(redis.call('ZRANGE', k_sched(queue), 0, -1)) do tally(id) end
  redis.call('DEL', k_waiting(queue))
  for kind, n in pairs(census) do redis.call('HSET', k_waiting(queue), kind, n) end
end
