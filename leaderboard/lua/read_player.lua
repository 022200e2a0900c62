-- One player: ARGV[3] player id, ARGV[4] names hash key.
-- Returns {'nometa'} | {'absent', gen, updated} | {'missing', gen, updated, total}
--       | {'ok', gen, updated, total, packed, rank, below, name}; below = players with strictly fewer points.
local gen, g, z, updated = open()
if not gen then return {'nometa'} end
local total = redis.call('ZCARD', z)
if total == 0 then return {'absent', gen, updated} end
local s = redis.call('ZSCORE', z, ARGV[3])
if not s then return {'missing', gen, updated, total} end
local pts = math.floor(tonumber(s) / SPAN)
local above = redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf')
local atleast = redis.call('ZCOUNT', z, num(pts * SPAN), '+inf')
return {'ok', gen, updated, total, s, above + 1, total - atleast, redis.call('HGET', ARGV[4], ARGV[3])}
