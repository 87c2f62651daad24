-- Enter jobs stored before conveyor kept tag indexes in them, one chunk of ids per call
-- (atomic, so a job deleted meanwhile is either indexed and then removed, or never seen).
-- ARGV: prefix, now|"" (unused), the last id of the previous chunk ("" at the start), limit.
-- Returns the last id of this chunk, or "" when every job has been looked at.
local after, limit = ARGV[3], tonumber(ARGV[4])
local from = '-'
if after ~= '' then from = '(' .. after end
local ids = redis.call('ZRANGEBYLEX', K_ALL, from, '+', 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  index_tags(id, redis.call('HGET', k_job(id), 'tags'), true)
end
finish()
if #ids < limit then return '' end
return ids[#ids]
