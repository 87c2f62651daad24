-- Claims under limits (#20), loaded with claim.lua after common.lua; the same decisions as
-- store/limits.py makes for the SQL stores. A limit is a JSON object in K_LIMITS under its
-- target (queue:<q>, kind:<k>, key:<kind>): max_running, rate, per_s (null when unset).

local KEY_SCAN = 2000  -- keys of one per-key limit a claim looks at
local PLAIN_SCAN = 2000  -- ready members of a queue a claim looks at for jobs with no key turn

local function num(v)
  if type(v) == 'number' then return v end
  return nil
end

-- Every limit, by target.
local function read_limits()
  local raw = redis.call('HGETALL', K_LIMITS)
  local limits = {}
  for i = 1, #raw, 2 do
    local l = cjson.decode(raw[i + 1])
    limits[raw[i]] = {max = num(l.max_running), rate = num(l.rate), per_s = num(l.per_s) or 1}
  end
  return limits
end

-- What a claim knows of the limits as it goes: running counts and buckets, read once each
-- and counted up by the jobs it takes.
local function admission(limits, now)
  local self = {limits = limits, run = {}, buckets = {}, taken = {}}

  -- A scope: {id = 'queue:q' | 'kind:k' | 'key:k|c', t = 'queue'|'kind'|'key', ...}
  function self.running(s)
    local n = self.run[s.id]
    if n == nil then
      local v
      if s.t == 'queue' then v = redis.call('HGET', k_counts(s.name), 'running')
      elseif s.t == 'kind' then v = redis.call('HGET', K_KINDRUN, s.name)
      else v = redis.call('HGET', k_krun(s.name), s.key) end
      n = math.max(0, tonumber(v or '0'))
      self.run[s.id] = n
    end
    return n
  end

  function self.tokens(limit, s)
    local b = self.buckets[s.id]
    if b == nil then
      local f = redis.call('HMGET', k_bucket('limit:' .. s.id), 'tokens', 'at')
      b = false
      if f[1] then b = {tonumber(f[1]), tonumber(f[2])} end
      self.buckets[s.id] = b
    end
    if not b then return limit.rate end
    return math.min(limit.rate, b[1] + math.max(0, now - b[2]) * limit.rate / limit.per_s)
  end

  -- The limits on a job of this queue, kind and key ('' = none), with their scopes.
  function self.applicable(queue, kind, ckey)
    local out = {}
    local l = limits['queue:' .. queue]
    if l then out[#out + 1] = {l, {id = 'queue:' .. queue, t = 'queue', name = queue}} end
    l = limits['kind:' .. kind]
    if l then out[#out + 1] = {l, {id = 'kind:' .. kind, t = 'kind', name = kind}} end
    if ckey ~= '' then
      l = limits['key:' .. kind]
      if l then
        out[#out + 1] = {l, {id = 'key:' .. kind .. '|' .. ckey, t = 'key', name = kind,
          key = ckey}}
      end
    end
    return out
  end

  function self.closed(limit, s)
    if limit.max and self.running(s) >= limit.max then return true end
    return limit.rate ~= nil and self.tokens(limit, s) < 1
  end

  -- Take the job if every limit admits it; else the type of the scope that holds it back.
  function self.admit(queue, kind, ckey)
    local ls = self.applicable(queue, kind, ckey)
    for _, ls_ in ipairs(ls) do
      if self.closed(ls_[1], ls_[2]) then return ls_[2].t end
    end
    for _, ls_ in ipairs(ls) do
      local limit, s = ls_[1], ls_[2]
      self.run[s.id] = self.running(s) + 1
      if limit.rate then
        self.buckets[s.id] = {self.tokens(limit, s) - 1, now}
        self.taken[s.id] = limit
      end
    end
    return nil
  end

  -- Write back the buckets the claim took from; a bucket left alone refills, so it expires
  -- once it would be full again (absent = full).
  function self.save()
    for id, limit in pairs(self.taken) do
      local b = self.buckets[id]
      local key = k_bucket('limit:' .. id)
      redis.call('HSET', key, 'tokens', fmt(b[1]), 'at', fmt(b[2]))
      redis.call('PEXPIRE', key, math.ceil((limit.rate - b[1]) * limit.per_s / limit.rate * 1000)
        + 1000)
    end
  end

  return self
end

-- Candidates of one queue that no per-key limit orders: its ready members in claim order,
-- skipping keyed jobs of `keyed` kinds, kinds not wanted and closed kinds.
local function plain_candidates(queue, n, want, keyed, closed, tag, out)
  -- Skip the walk when every waiting job of the queue is a keyed job of a keyed kind.
  local census = redis.call('HGETALL', k_waiting(queue))
  local any = false
  for j = 1, #census, 2 do
    local kind, waiting = census[j], tonumber(census[j + 1])
    if not closed[kind] and (not want or want[kind]) then
      local with_key = tonumber(redis.call('HGET', k_kwait(queue), kind) or '0')
      if not keyed[kind] or waiting > with_key then any = true end
    end
  end
  if not any then return end
  local found, offset = 0, 0
  local page_size = math.max(n, 100)
  while found < n and offset < PLAIN_SCAN do
    local page = redis.call('ZRANGE', k_ready(queue), offset, offset + page_size - 1,
      'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      local member = page[i]
      local id = string.sub(member, 18)
      local f = redis.call('HMGET', k_job(id), 'kind', 'concurrency_key', 'tags')
      local kind, ckey = f[1], f[2] or ''
      local ok = kind and not closed[kind] and (not want or want[kind])
        and not (keyed[kind] and ckey ~= '')
      if ok and tag then
        ok = false
        for _, t in ipairs(tags_of(f[3])) do if t == tag then ok = true end end
      end
      if ok then
        out[#out + 1] = {tonumber(page[i + 1]), tonumber(string.sub(member, 1, 16)) / 1e6, id,
          queue, member, kind, ckey, nil}
        found = found + 1
        if found >= n then break end
      end
    end
    offset = offset + page_size
  end
end

-- Candidates of a per-key-limited kind: its keys least recently started first, each giving
-- its share of n (at most what its limit leaves it), until n are found. Keys with no
-- unfinished job left leave the turn order.
local function keyed_candidates(adm, kind, queues, n, tag, out)
  local limit = adm.limits['key:' .. kind]
  local keys = redis.call('ZRANGE', k_lkeys(kind), 0, KEY_SCAN - 1, 'WITHSCORES')
  local share = math.ceil(n / math.max(1, #keys / 2))
  local found = 0
  for i = 1, #keys, 2 do
    if found >= n then break end
    local ckey, turn = keys[i], tonumber(keys[i + 1])
    local s = {id = 'key:' .. kind .. '|' .. ckey, t = 'key', name = kind, key = ckey}
    local room = share
    if limit.max then room = math.min(room, limit.max - adm.running(s)) end
    if limit.rate then room = math.min(room, math.floor(adm.tokens(limit, s))) end
    if room > 0 then
      local any = false
      for _, queue in ipairs(queues) do
        local page = redis.call('ZRANGE', k_kq(queue, kind, ckey), 0, room - 1, 'WITHSCORES')
        for j = 1, #page, 2 do
          any = true
          local member = page[j]
          local id = string.sub(member, 18)
          local ok = true
          if tag then
            ok = false
            for _, t in ipairs(tags_of(redis.call('HGET', k_job(id), 'tags'))) do
              if t == tag then ok = true end
            end
          end
          if ok then
            out[#out + 1] = {tonumber(page[j + 1]), turn, id, queue, member, kind, ckey,
              tonumber(string.sub(member, 1, 16)) / 1e6}
            found = found + 1
          end
        end
      end
      if not any and adm.running(s) == 0 and redis.call('EXISTS', k_kact(kind, ckey)) == 0 then
        redis.call('ZREM', k_lkeys(kind), ckey)
      end
    end
  end
end

-- Up to n jobs of `queues` the limits admit, in claim.lua's candidate form {score, member,
-- id, queue}: best first by priority, then by turn (a keyed job's key's last start, 0 =
-- never; any other job's run_at), then run_at, then id. Taking a key's job moves its turn to
-- now, so keys take turns within a claim as from claim to claim.
local function claim_limited(queues, n, kinds, tag, now)
  local limits = read_limits()
  local adm = admission(limits, now)
  local open = {}
  for _, queue in ipairs(queues) do
    local l = limits['queue:' .. queue]
    if not (l and adm.closed(l, {id = 'queue:' .. queue, t = 'queue', name = queue})) then
      open[#open + 1] = queue
    end
  end
  local keyed, closed = {}, {}
  for target, l in pairs(limits) do
    local scope, name = string.match(target, '^(%a+):(.*)$')
    if scope == 'key' then keyed[name] = true end
    if scope == 'kind' and adm.closed(l, {id = target, t = 'kind', name = name}) then
      closed[name] = true
    end
  end
  local cands = {}
  for _, queue in ipairs(open) do plain_candidates(queue, n, kinds, keyed, closed, tag, cands) end
  if #open > 0 then
    for kind in pairs(keyed) do
      if not closed[kind] and (not kinds or kinds[kind]) then
        keyed_candidates(adm, kind, open, n, tag, cands)
      end
    end
  end
  -- Group by key (keyed jobs) or not (the rest), each group in claim order.
  local groups, order = {}, {}
  for _, c in ipairs(cands) do
    local g = '|'
    if c[8] then g = c[6] .. '|' .. c[7] end
    if not groups[g] then
      groups[g] = {}
      order[#order + 1] = g
    end
    table.insert(groups[g], c)
  end
  for _, g in ipairs(order) do
    table.sort(groups[g], function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[5] < b[5]
    end)
  end
  -- Each group's head and its sort key {-priority, turn, run_at, id}, kept in parallel
  -- arrays and recomputed only when the group's head changes.
  local heads, k1, k2, k3, k4 = {}, {}, {}, {}, {}
  local function set_head(i, pos, turn)
    local c = groups[order[i]][pos]
    heads[i] = pos
    if c then
      k1[i], k2[i], k3[i], k4[i] = c[1], turn or c[2], c[8] or c[2], c[3]
    else
      k1[i] = nil
    end
  end
  for i = 1, #order do set_head(i, 1, nil) end
  local chosen = {}
  while #chosen < n do
    local best = nil
    for i = 1, #order do
      if k1[i] and (not best or k1[i] < k1[best] or (k1[i] == k1[best] and (k2[i] < k2[best]
          or (k2[i] == k2[best] and (k3[i] < k3[best]
          or (k3[i] == k3[best] and k4[i] < k4[best])))))) then
        best = i
      end
    end
    if not best then break end
    local group = groups[order[best]]
    local c = group[heads[best]]
    local held = adm.admit(c[4], c[6], c[7])
    if held == nil then
      chosen[#chosen + 1] = {c[1], c[5], c[3], c[4]}
      if c[8] then set_head(best, heads[best] + 1, now) else set_head(best, heads[best] + 1) end
    elseif held == 'key' and c[8] then
      set_head(best, #group + 1)  -- the key is full: none of its jobs can start
    else
      set_head(best, heads[best] + 1, c[8] and k2[best] or nil)
    end
  end
  adm.save()
  return chosen
end
