-- Top of a board-period: ARGV[3] offset, ARGV[4] limit, ARGV[5] names hash key.
-- JSON: {s: nometa} | {s: absent, gen, updated}
--     | {s: ok, gen, updated, total, first_rank, rows: [member, score, ...], names: [name | false, ...]}.
local gen, g, z, updated = open()
if not gen then return NOMETA end
local total = redis.call('ZCARD', z)
if total == 0 then return absent(gen, updated) end
local off = tonumber(ARGV[3])
local rows = redis.call('ZRANGE', z, off, off + tonumber(ARGV[4]) - 1, 'REV', 'WITHSCORES')
local first = 0
if #rows > 0 then first = rank_of(z, rows[2]) end
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, first_rank = first, rows = rows,
                     names = names_of(rows, ARGV[5])})
