-- Take n tokens from a token bucket (capacity rate, refilled at rate per per_s; absent = full).
-- ARGV: prefix, now|"", key, n, rate, per_s. Returns "0" if taken, else the seconds until n
-- would be there (as text; nothing taken).
local now = clock(ARGV[2])
local key, n, rate, per_s = k_bucket(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local f = redis.call('HMGET', key, 'tokens', 'at')
local tokens = rate
if f[1] then
  tokens = math.min(rate, tonumber(f[1]) + math.max(0, now - tonumber(f[2])) * rate / per_s)
end
if tokens < n then return fmt((n - tokens) * per_s / rate) end
tokens = tokens - n
redis.call('HSET', key, 'tokens', fmt(tokens), 'at', fmt(now))
-- a bucket left alone is full again after this long: then it may as well be absent
redis.call('PEXPIRE', key, math.ceil((rate - tokens) * per_s / rate * 1000) + 1000)
return '0'
