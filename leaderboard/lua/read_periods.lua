-- Period keys present in the active generation (ARGV[2] unused). JSON: {s: nometa} | {s: ok, gen, keys}.
local gen, g = open()
if not gen then return NOMETA end
return cjson.encode({s = 'ok', gen = gen, keys = redis.call('SMEMBERS', g .. ':periods')})
