-- What the SSE pollers watch: changes whenever the board-period is written or the generation flips.
-- JSON: {s: nometa} | {s: stale, gen} | {s: ok, gen, updated}.
local gen, updated = open()
if not gen then return updated end
return cjson.encode({s = 'ok', gen = gen, updated = updated})
