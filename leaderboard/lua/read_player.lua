-- One player: ARGV[2] player id.
-- JSON: {s: nometa} | {s: stale, gen} | {s: absent, ...} | {s: missing, gen, updated, total}
--     | {s: ok, gen, updated, total, score, rank, below, names}; below = players with strictly fewer points.
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local s = redis.call('ZSCORE', z, ARGV[2])
if not s then return missing(gen, updated, total) end
local pts = math.floor(tonumber(s) / SPAN)
local above = redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf')
local atleast = redis.call('ZCOUNT', z, num(pts * SPAN), '+inf')
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, score = s, rank = above + 1,
                     below = total - atleast, names = names_of({ARGV[2]})})
