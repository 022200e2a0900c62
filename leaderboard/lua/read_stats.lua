-- Board-period stats. JSON: {s: nometa} | {s: stale, gen} | {s: absent, ...}
--     | {s: ok, gen, updated, total, top, events}.
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local top = redis.call('ZRANGE', z, 0, 0, 'REV', 'WITHSCORES')
local events = redis.call('HGET', KEYS[3], 'events') or '0'
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, top = top[2], events = events})
