-- Several players at once: ARGV[2..] player ids.
-- JSON: {s: nometa} | {s: stale, gen} | {s: absent, ...} | {s: ok, gen, updated, total, scores, ranks, names};
-- per requested id: score false and rank 0 when not on the board.
local gen, updated, total = open_period()
if not gen then return updated end
local z = KEYS[2]
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local scores = redis.call('ZMSCORE', z, unpack(ids))
local ranks = {}
for i = 1, #ids do
  if scores[i] then ranks[i] = rank_of(z, scores[i]) else ranks[i] = 0 end
end
return cjson.encode({s = 'ok', gen = gen, updated = updated, total = total, scores = scores, ranks = ranks,
                     names = names_of(ids)})
