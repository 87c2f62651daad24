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

-- Append one event to the job's log and the store-wide feed, under one new sequence number.
local function event(id, at, kind, data)
  local seq = redis.call('INCR', K_SEQ)
  local e = '{"seq":' .. seq .. ',"job_id":' .. cjson.encode(id) .. ',"at":' .. at
    .. ',"type":"' .. kind .. '","data":' .. data .. '}'
  redis.call('ZADD', K_FEED, seq, e)
  redis.call('ZADD', k_ev(id), seq, e)
end

-- Per-queue state counters (queue_stats reads them instead of scanning jobs).
local function count(queue, state, delta)
  redis.call('HINCRBY', k_counts(queue), state, delta)
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

local function wake(queues)
  for queue in pairs(queues) do redis.call('PUBLISH', P .. 'wake:' .. queue, '') end
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
    count(queue, 'scheduled', -1)
    count(queue, 'queued', 1)
    event(id, nowstr, 'state', '{"state":"queued"}')
  end
  return #ids
end

-- ZREM in chunks: unpack() of a huge table overflows Lua's C stack.
local function zrem_many(key, members)
  for i = 1, #members, 500 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 499, #members)))
  end
end

-- Remove a finished job, its events (from its log and the feed) and its index entries.
local function delete_job(id)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'queue', 'state')
  if not f[1] then return end
  redis.call('ZREM', k_done(f[1]), id)
  count(f[1], f[2], -1)
  zrem_many(K_FEED, redis.call('ZRANGE', k_ev(id), 0, -1))
  redis.call('DEL', k_ev(id), jk)
  redis.call('ZREM', K_ALL, id)
end
