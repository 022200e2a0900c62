-- Period keys present in the active generation (KEYS[4]).
-- JSON: {s: nometa} | {s: stale, gen} | {s: ok, gen, keys}.
local gen, reply = open()
if not gen then return reply end
return cjson.encode({s = 'ok', gen = gen, keys = redis.call('SMEMBERS', KEYS[4])})
