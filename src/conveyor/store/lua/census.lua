-- Count every queue's waiting jobs by kind (k_waiting), once, for a store written before the
-- census existed; then mark the store as counted.
-- ARGV: prefix, now|"" (unused), the marker key.
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do recount_kinds(queue) end
redis.call('SET', ARGV[3], '1')
return 1
