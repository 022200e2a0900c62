-- What the SSE pollers watch: changes whenever the board-period is written or the generation flips.
-- JSON: {s: nometa} | {s: ok, gen, updated}.
local gen, g, z, updated = open()
if not gen then return NOMETA end
return cjson.encode({s = 'ok', gen = gen, updated = updated})
