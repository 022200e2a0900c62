-- Board-period stats. Returns {'nometa'} | {'absent', gen, updated}
--       | {'ok', gen, updated, total, top_packed, events}.
local gen, g, z, updated = open()
if not gen then return {'nometa'} end
local total = redis.call('ZCARD', z)
if total == 0 then return {'absent', gen, updated} end
local top = redis.call('ZRANGE', z, 0, 0, 'REV', 'WITHSCORES')
local events = redis.call('HGET', g .. ':st:' .. ARGV[2], 'events') or '0'
return {'ok', gen, updated, total, top[2], events}
