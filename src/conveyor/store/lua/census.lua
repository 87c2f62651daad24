-- Bring a store written before the census up to date, once: count every queue's waiting jobs
-- by kind (k_waiting), drop the index of running jobs it kept (the leases serve as one now),
-- then mark the store as counted.
-- ARGV: prefix, now|"" (unused), the marker key.
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do recount_kinds(queue) end
redis.call('DEL', P .. 'st:running')
redis.call('SET', ARGV[3], '1')
return 1
