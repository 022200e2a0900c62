-- Players within a packed-score range, descending: ARGV[2] lowest packed (inclusive), ARGV[3] highest packed
-- (inclusive), ARGV[4] offset, ARGV[5] limit.
-- JSON: {s: nometa} | {s: stale, gen} | {s: absent, ...}
--     | {s: ok, gen, updated, total, matching, first_rank, first (0-based position), rows, names}.
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local matching = redis.call('ZCOUNT', z, ARGV[2], ARGV[3])
local rows = redis.call('ZRANGE', z, ARGV[3], ARGV[2], 'BYSCORE', 'REV', 'LIMIT', ARGV[4], ARGV[5], 'WITHSCORES')
local first, pos = 0, 0
if #rows > 0 then
  first = rank_of(z, rows[2])
  pos = redis.call('ZCOUNT', z, '(' .. rows[2], '+inf')
end
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, matching = matching,
                     first_rank = first, first = pos, rows = rows, names = row_names(rows)})
