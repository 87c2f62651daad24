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
-- Per tag, the ids of the jobs carrying it (all scored 0: newest first by id, like K_ALL).
local function k_tag(tag) return P .. 'tag:' .. tag end
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

-- Events and counter changes are buffered and written once at the end (`finish`), so a batch
-- costs one INCRBY for its sequence numbers and a few multi-member ZADDs on the feed instead
-- of three commands per event. Every script that changes anything calls finish() before
-- returning; a script never fails half-way after a write (arguments are checked first).
local pending_events = {}
local pending_counts = {}
local pending_wake = {}

-- Queue one event for the job's log and the store-wide feed.
local function event(id, at, kind, data)
  pending_events[#pending_events + 1] = {id, at, kind, data}
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

-- A job changes state: per-queue counters (queue_stats reads them instead of scanning jobs)
-- and the per-state id index (list_jobs by state, newest first). delta is +1 or -1.
local function count(queue, state, delta, id)
  local c = pending_counts[queue]
  if not c then
    c = {}
    pending_counts[queue] = c
  end
  c[state] = (c[state] or 0) + delta
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
  local n = #pending_events
  if n > 0 then
    local seq = redis.call('INCRBY', K_SEQ, n) - n
    local feed = {}
    for _, e in ipairs(pending_events) do
      seq = seq + 1
      local text = '{"seq":' .. seq .. ',"job_id":' .. cjson.encode(e[1]) .. ',"at":' .. e[2]
        .. ',"type":"' .. e[3] .. '","data":' .. e[4] .. '}'
      redis.call('ZADD', k_ev(e[1]), seq, text)
      feed[#feed + 1] = seq
      feed[#feed + 1] = text
    end
    call_chunked('ZADD', K_FEED, feed, 400)
    pending_events = {}
  end
  for queue, changes in pairs(pending_counts) do
    for state, delta in pairs(changes) do
      if delta ~= 0 then redis.call('HINCRBY', k_counts(queue), state, delta) end
    end
  end
  pending_counts = {}
  for queue in pairs(pending_wake) do redis.call('PUBLISH', P .. 'wake:' .. queue, '') end
  pending_wake = {}
end

-- Ready queues are sorted sets scored by -priority; equal scores sort by member, which starts
-- with the run_at in zero-padded microseconds and ends with the id: claim order is
-- priority DESC, run_at, id, exactly, with no floating-point packing of the three.
local function ready_member(run_at, id)
  return string.format('%016.0f', math.floor(tonumber(run_at) * 1000000)) .. ':' .. id
end

local function make_ready(id, queue, priority, run_at)
  redis.call('ZADD', k_ready(queue), -tonumber(priority), ready_member(run_at, id))
end

local function unready(id, queue, run_at)
  redis.call('ZREM', k_ready(queue), ready_member(run_at, id))
end

-- Move due scheduled jobs of one queue to its ready set (at most `limit`).
local function promote(queue, now, nowstr, limit)
  local skey = k_sched(queue)
  local ids = redis.call('ZRANGEBYSCORE', skey, '-inf', nowstr, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local jk = k_job(id)
    local f = redis.call('HMGET', jk, 'priority', 'run_at')
    redis.call('ZREM', skey, id)
    redis.call('HSET', jk, 'state', 'queued', 'updated_at', nowstr)
    make_ready(id, queue, f[1], f[2])
    count(queue, 'scheduled', -1, id)
    count(queue, 'queued', 1, id)
    event(id, nowstr, 'state', '{"state":"queued"}')
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
  local f = redis.call('HMGET', jk, 'queue', 'state', 'tags')
  if not f[1] then return end
  redis.call('ZREM', k_done(f[1]), id)
  index_tags(id, f[3], false)
  count(f[1], f[2], -1, id)
  call_chunked('ZREM', K_FEED, redis.call('ZRANGE', k_ev(id), 0, -1), 400)
  redis.call('DEL', k_ev(id), jk)
  redis.call('ZREM', K_ALL, id)
end
