-- wrk script for the BASELINE (bench/baseline_sync.py): POST /scores with a fresh event each request.
-- Each wrk thread seeds its own generator (setup gives it a distinct id) so event_ids never collide.
local counter = 1
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

local headers = { ["Content-Type"] = "application/json" }

function request()
  counter = counter + 1
  local id = string.format("%08x-%04x-4%03x-a%03x-%06x%06x", math.random(0, 2147483646),
    math.random(0, 65535), math.random(0, 4095), math.random(0, 4095), (tid or 0) * 4096 + math.random(0, 4095),
    counter % 16777216)
  local player = "p" .. math.random(1, 100000)
  local body = '{"event_id":"' .. id .. '","match_id":"m-' .. id .. '","player_id":"' .. player
    .. '","game":"chess","points":' .. math.random(1, 10) .. ',"occurred_at":"'
    .. os.date("!%Y-%m-%dT%H:%M:%S") .. '.000Z"}'
  return wrk.format("POST", "/scores", headers, body)
end
