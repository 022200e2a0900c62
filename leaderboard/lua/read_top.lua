-- Top of a board-period: ARGV[3] offset, ARGV[4] limit, ARGV[5] names hash key.
-- Returns {'nometa'} | {'absent', gen, updated} | {'ok', gen, updated, total, first_rank, rows, names}.
local gen, g, z, updated = open()
if not gen then return {'nometa'} end
local total = redis.call('ZCARD', z)
if total == 0 then return {'absent', gen, updated} end
local off = tonumber(ARGV[3])
local rows = redis.call('ZRANGE', z, off, off + tonumber(ARGV[4]) - 1, 'REV', 'WITHSCORES')
local first = 0
if #rows > 0 then first = rank_of(z, rows[2]) end
return {'ok', gen, updated, total, first, rows, names_of(rows, ARGV[5])}
