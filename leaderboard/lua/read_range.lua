-- Players within a packed-score range, descending: ARGV[3] lowest packed (inclusive), ARGV[4] highest packed
-- (inclusive), ARGV[5] offset, ARGV[6] limit, ARGV[7] names hash key.
-- JSON: {s: nometa} | {s: absent, ...}
--     | {s: ok, gen, updated, total, matching, first_rank, first (0-based position), rows, names}.
local gen, g, z, updated = open()
if not gen then return NOMETA end
local total = redis.call('ZCARD', z)
if total == 0 then return absent(gen, updated) end
local matching = redis.call('ZCOUNT', z, ARGV[3], ARGV[4])
local rows = redis.call('ZRANGE', z, ARGV[4], ARGV[3], 'BYSCORE', 'REV', 'LIMIT', ARGV[5], ARGV[6], 'WITHSCORES')
local first, pos = 0, 0
if #rows > 0 then
  first = rank_of(z, rows[2])
  pos = redis.call('ZCOUNT', z, '(' .. rows[2], '+inf')
end
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, matching = matching,
                     first_rank = first, first = pos, rows = rows, names = names_of(rows, ARGV[7])})
