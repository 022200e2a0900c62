-- One player: ARGV[3] player id, ARGV[4] names hash key.
-- JSON: {s: nometa} | {s: absent, ...} | {s: missing, gen, updated, total}
--     | {s: ok, gen, updated, total, score, rank, below, name}; below = players with strictly fewer points.
local gen, g, z, updated = open()
if not gen then return NOMETA end
local total = redis.call('ZCARD', z)
if total == 0 then return absent(gen, updated) end
local s = redis.call('ZSCORE', z, ARGV[3])
if not s then return cjson.encode({s = 'missing', gen = gen, updated = updated, total = total}) end
local pts = math.floor(tonumber(s) / SPAN)
local above = redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf')
local atleast = redis.call('ZCOUNT', z, num(pts * SPAN), '+inf')
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, score = s, rank = above + 1,
                     below = total - atleast, name = redis.call('HGET', ARGV[4], ARGV[3])})
