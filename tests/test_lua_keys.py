"""Every Lua script declares every key it touches (what Redis Cluster needs to route a call to one slot).

The guard of the generated prelude (leaderboard.lua_scripts.GUARD) makes a command on an undeclared key fail;
these tests show it does, on the real Redis, and that nothing can bypass it: every script the package loads
goes through the prelude, and no script reaches Redis other than through the guarded ``redis.call``. The
callers' declarations are then checked by every test that runs a script (apply, flip, recompute, reads).
"""

from __future__ import annotations

import ast
import re
import uuid
from importlib import resources
from pathlib import Path
from typing import cast

import pytest
import redis

from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import GUARD, UNDECLARED, prelude, script
from leaderboard.settings import Settings
from tests.test_redis_apply import stream, truth

ROOT = Path(__file__).resolve().parents[1]


def test_a_command_on_an_undeclared_key_fails(redis_client: redis.Redis) -> None:
    declared, other = f"t:{uuid.uuid4().hex}:a", f"t:{uuid.uuid4().hex}:b"
    ok = prelude() + "redis.call('SET', KEYS[1], 'x'); return redis.call('GET', KEYS[1])"
    assert redis_client.eval(ok, 1, declared) == b"x"
    # The key is built the way the scripts build theirs (concatenation): the guard still sees it.
    bad = prelude() + "return redis.call('SET', KEYS[1] .. ':b', 'x')"
    with pytest.raises(redis.ResponseError, match=UNDECLARED):
        redis_client.eval(bad, 1, declared)
    with pytest.raises(redis.ResponseError, match=UNDECLARED):
        redis_client.eval(prelude() + "return redis.call('GET', ARGV[1])", 1, declared, other)
    assert redis_client.exists(declared + ":b", other) == 0
    redis_client.delete(declared)


def test_an_apply_missing_a_generation_key_fails(config: Settings, redis_client: redis.Redis) -> None:
    """The sink's declaration is what apply.lua needs: without one of its keys, the call fails."""
    keys = Keys(config.redis_prefix)
    board = Board(id="global")
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    records: list[Canonical] = stream(20, 3)
    sink = RedisSink(redis_client, keys, [board])
    ordered = sorted(records, key=lambda r: (r.partition, r.offset))
    [body] = sink._bodies(board, [ordered], None, {r.partition: r.offset for r in ordered})
    declared, writing = sink.declared(board, body.periods, None)
    assert writing == ["1"]
    apply = redis_client.register_script(script("apply"))
    for i in range(1, len(declared)):
        redis_client.delete(*declared[1:])  # a fresh generation: the call touches every key it declares
        short = declared[:i] + declared[i + 1 :]
        with pytest.raises(redis.ResponseError, match=UNDECLARED):
            apply(keys=short, args=[keys.base(board.id), body.data, "0", *writing])
    redis_client.delete(*declared[1:])
    res = apply(keys=declared, args=[keys.base(board.id), body.data, "0", *writing])
    assert res[0] == b"ok"
    assert int(res[1]) > 0


def test_every_script_goes_through_the_guard() -> None:
    """No script calls Redis other than through the guarded ``redis.call``, and every script the Python
    side registers is built by leaderboard.lua_scripts (prelude in front) or starts with GUARD."""
    for path in resources.files("leaderboard").joinpath("lua").iterdir():
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        for bypass in ("pcall", "rcall", "DECLARED", "setmetatable", "rawget", "getmetatable"):
            assert bypass not in code, f"{path.name} uses {bypass}"
        assert not re.search(r"\bredis\s*=", code), f"{path.name} rebinds redis"
        assert not re.search(r"KEYS\s*\[[^]]*\]\s*=", code), f"{path.name} writes KEYS"
    assert prelude().startswith(GUARD)
    registered = 0
    for py in [*ROOT.glob("consumers/*.py"), *ROOT.glob("query_api/*.py"), *ROOT.glob("leaderboard/**/*.py")]:
        tree = ast.parse(py.read_text())
        scripts = {  # module-level NAME = GUARD + "..."
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.BinOp)
            and isinstance(node.value.left, ast.Name)
            and node.value.left.id == "GUARD"
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in {"register_script", "eval"}:
                registered += 1
                arg = node.args[0]
                built = isinstance(arg, ast.Call) and getattr(arg.func, "id", "") in {"script", "script_text"}
                assert built or (isinstance(arg, ast.Name) and arg.id in scripts), (
                    f"{py.name}:{node.lineno} loads a script without the guard"
                )
    assert registered >= 5


def test_a_call_declared_for_old_generations_is_resent_for_the_new_ones(
    config: Settings, redis_client: redis.Redis
) -> None:
    """The sink declares the generations it last read in meta's ``writing``; a rebuild that starts (or a flip)
    in between makes apply.lua answer ``stale`` without writing, and the sink resends the call, declared for
    the generations now written: the batch lands in each of them once."""
    keys = Keys(config.redis_prefix)
    board = Board(id="global")
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    records = stream(60, 5)
    sink = RedisSink(redis_client, keys, [board], max_updates=40)
    sink.apply(records[:20])  # caches writing = "1"
    redis_client.hset(keys.meta(board.id), "writing", "1,2")  # a rebuild starts writing generation 2
    sink.apply(records[20:40])
    redis_client.hset(keys.meta(board.id), mapping={"active": 2, "writing": "2"})  # and flips
    sink.apply(records[40:])
    sink.apply(records[20:])  # a redelivery changes nothing

    def points(gen: int) -> dict[str, int]:
        rows = redis_client.zrange(keys.board(board.id, gen, "all_time"), 0, -1, withscores=True)
        return {m.decode(): scoring.points_of(s) for m, s in cast("list[tuple[bytes, float]]", rows)}

    assert points(1) == truth(records[:40])
    assert points(2) == truth(records[20:])  # what a rebuild's checkpoint adds to generation 2 is its own
