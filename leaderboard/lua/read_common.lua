-- Prelude of every read_*.lua script (query_api.store prepends it): check the active generation and rank
-- rows, all inside the one EVALSHA of a request.
-- Every key is DECLARED, all in the board's {board} hash-tag slot (Redis Cluster):
--   KEYS[1] meta hash, KEYS[2] the period's sorted set, KEYS[3] its stats hash, KEYS[4] the periods set,
--   all three of generation ARGV[1] (the generation the caller believes active: it builds the key names).
-- If the active generation is another one (a flip), the script answers {s: stale, gen} and the caller
-- calls again with the keys of that generation. Display names (another slot) are read by the caller.
-- Replies are one JSON string (cjson): a single bulk reply is far cheaper for the client to parse than
-- nested RESP arrays. Scores stay strings (cjson prints numbers with 14 digits; packed scores need 16).
local SPAN = 16777216          -- 2^24, leaderboard.scoring.TIME_SPAN
local function num(x) return string.format('%.0f', x) end
-- Returns gen, updated_ms ('' if never) when ARGV[1] is the active generation; else nil and the reply to
-- return as is (nometa: no active generation; stale: another one is active).
local function open()
  local gen = redis.call('HGET', KEYS[1], 'active')
  if not gen then return nil, '{"s":"nometa"}' end
  if gen ~= ARGV[1] then return nil, cjson.encode({s = 'stale', gen = gen}) end
  return gen, redis.call('HGET', KEYS[3], 'updated_ms') or ''
end
local function absent(gen, updated) return cjson.encode({s = 'absent', gen = gen, updated = updated}) end
-- Competition rank of a packed score: 1 + players with strictly more points.
local function rank_of(z, packed)
  local pts = math.floor(tonumber(packed) / SPAN)
  return redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf') + 1
end
