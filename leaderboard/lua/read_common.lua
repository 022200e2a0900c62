-- Prelude of every read_*.lua script (query_api.store prepends it): resolve the active generation from the
-- board's meta hash and rank rows, all inside the one EVALSHA of a request.
-- KEYS[1] is always the meta hash; ARGV[1] the key base "<prefix>:{board}", ARGV[2] the period key.
-- Replies are one JSON string (cjson): a single bulk reply is far cheaper for the client to parse than
-- nested RESP arrays. Scores stay strings (cjson prints numbers with 14 digits; packed scores need 16).
-- Redis Cluster: every board key shares the {board} hash tag, so the generation keys built here live in
-- KEYS[1]'s slot (they are derived, not declared, because the generation is only known inside the script).
-- The display-name hash "<prefix>:names" has no board tag: on a Cluster the HMGET of names must move to a
-- second call (or names must be copied per board). On one node, as deployed, it is fine.
local SPAN = 16777216          -- 2^24, leaderboard.scoring.TIME_SPAN
local function num(x) return string.format('%.0f', x) end
local NOMETA = '{"s":"nometa"}'
-- Open the board-period: returns gen, generation base, sorted-set key, updated_ms ('' if never).
local function open()
  local gen = redis.call('HGET', KEYS[1], 'active')
  if not gen then return nil end
  local g = ARGV[1] .. ':g' .. gen
  local updated = redis.call('HGET', g .. ':st:' .. ARGV[2], 'updated_ms') or ''
  return gen, g, g .. ':' .. ARGV[2], updated
end
local function absent(gen, updated) return cjson.encode({s = 'absent', gen = gen, updated = updated}) end
-- Competition rank of a packed score: 1 + players with strictly more points.
local function rank_of(z, packed)
  local pts = math.floor(tonumber(packed) / SPAN)
  return redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf') + 1
end
-- Display names of the members of a WITHSCORES reply (false where unknown).
local function names_of(rows, names_key)
  if #rows == 0 then return {} end
  local members = {}
  for i = 1, #rows, 2 do members[#members + 1] = rows[i] end
  return redis.call('HMGET', names_key, unpack(members))
end
