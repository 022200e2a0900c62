-- Period keys present in the active generation (ARGV[2] unused). Returns {'nometa'} | {'ok', gen, keys}.
local gen, g = open()
if not gen then return {'nometa'} end
return {'ok', gen, redis.call('SMEMBERS', g .. ':periods')}
