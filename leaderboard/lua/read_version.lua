-- What the SSE pollers watch: cheap, changes whenever the board-period is written or the generation flips.
-- Returns {'nometa'} | {'ok', gen, updated}.
local gen, g, z, updated = open()
if not gen then return {'nometa'} end
return {'ok', gen, updated}
