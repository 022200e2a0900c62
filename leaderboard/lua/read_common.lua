-- Prelude of every read_*.lua script (query_api.store prepends it): check the active generation and rank
-- rows, all inside the one EVALSHA of a request.
-- Every key is DECLARED, all in the board's {board} hash-tag slot (Redis Cluster):
--   KEYS[1] meta hash, KEYS[2] the period's sorted set, KEYS[3] its stats hash, KEYS[4] the periods set,
--   the last three of generation ARGV[1] (the generation the caller believes active: it names the keys);
--   KEYS[5], on a single node only, the shared display-names hash.
-- If the active generation is another one (a flip), the script answers {s: stale, gen} and the caller
-- calls again with the keys of that generation. On a Redis Cluster the names hash is in another slot: the
-- caller does not declare it and reads the names with an HMGET of its own (the reply then has no names).
-- Replies are one JSON string (cjson): a single bulk reply is far cheaper for the client to parse than
-- nested RESP arrays. Scores stay strings (cjson prints numbers with 14 digits; packed scores need 16).
-- SPAN comes from the generated prelude (leaderboard.lua_scripts).
local function num(x) return string.format('%.0f', x) end
-- Returns gen, updated_ms ('' if never) when ARGV[1] is the active generation; else nil and the reply to
-- return as is (nometa: no active generation; stale: another one is active).
-- ARGV[1] may be "<gen>:<definition version>" (a board managed at runtime): if the board's live definition
-- (meta.def) is another version, the generation was built under a rule the caller does not know yet (an
-- activation it has not seen): {s: redefined, def}, and the caller answers 503 until it has reloaded.
local function open()
  local gen = redis.call('HGET', KEYS[1], 'active')
  if not gen then return nil, '{"s":"nometa"}' end
  local want, want_def = ARGV[1], nil
  local sep = string.find(want, ':', 1, true)
  if sep then want, want_def = string.sub(want, 1, sep - 1), string.sub(want, sep + 1) end
  if gen ~= want then return nil, cjson.encode({s = 'stale', gen = gen}) end
  if want_def then
    local def = redis.call('HGET', KEYS[1], 'def')
    if def and def ~= want_def and def ~= 'retired' then return nil, cjson.encode({s = 'redefined', def = def}) end
  end
  return gen, redis.call('HGET', KEYS[3], 'updated_ms') or ''
end
local function absent(gen, updated) return cjson.encode({s = 'absent', gen = gen, updated = updated}) end
local function missing(gen, updated, total)
  return cjson.encode({s = 'missing', gen = gen, updated = updated, total = total})
end
-- open(), then the period's player count: gen, updated, total; or nil and the reply to return as is (also
-- absent when the period has no players).
local function open_period()
  local gen, updated = open()
  if not gen then return nil, updated end
  local total = redis.call('ZCARD', KEYS[2])
  if total == 0 then return nil, absent(gen, updated) end
  return gen, updated, total
end
-- Competition rank of a packed score: 1 + players with strictly more points.
local function rank_of(z, packed)
  local pts = math.floor(tonumber(packed) / SPAN)
  return redis.call('ZCOUNT', z, num((pts + 1) * SPAN), '+inf') + 1
end
-- Display names of players (false where unknown), or nil (omitted from the reply) without KEYS[5].
local function names_of(members)
  if not KEYS[5] then return nil end
  if #members == 0 then return {} end
  return redis.call('HMGET', KEYS[5], unpack(members))
end
-- The names of the members of a WITHSCORES reply.
local function row_names(rows)
  local members = {}
  for i = 1, #rows, 2 do members[#members + 1] = rows[i] end
  return names_of(members)
end
