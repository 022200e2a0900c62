"""The Lua scripts against the Python definitions they share, in the real Redis.

- Keys: every key function of the generated prelude builds exactly what leaderboard.keys builds, and no
  script spells a key suffix or an encoding constant itself.
- Merge: apply.lua (through RedisSink, in random batches and chunks, with redeliveries) ends equal to
  leaderboard.aggregate's Rule.merge folded event by event, for every aggregation and order.
- Around-me: read_around.lua's window equals leaderboard.ranking.window at every position and radius.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.plan import Canonical, fold, scores
from consumers.redis_sink import RedisSink
from leaderboard import keys as keys_mod
from leaderboard import ranking, scoring
from leaderboard.aggregate import AGGREGATIONS, ORDERS, Rule, micros
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import prelude
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from query_api.store import script_text
from schemas.model import MatchWon

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)


def test_every_key_the_scripts_build_is_the_python_one(config: Settings, redis_client: redis.Redis) -> None:
    keys = Keys(config.redis_prefix)
    board, gen, period = "chess-eu_2", 17, "weekly:2026-W48"
    calls = [f"key_{n}(ARGV[1]{', ARGV[2]' if '{gen}' in t else ''})" for n, t in keys_mod.BASE_KEYS.items()]
    calls += [
        f"gkey_{n}(key_gen(ARGV[1], ARGV[2]){', ARGV[3]' if '{period}' in t else ''})"
        for n, t in keys_mod.GEN_KEYS.items()
    ]
    script = prelude() + "return {" + ", ".join(calls) + "}"
    got = [b.decode() for b in redis_client.eval(script, 0, keys.base(board), gen, period)]
    want = [
        getattr(keys, n)(board, gen) if n == "gen" else getattr(keys, n)(board) for n in keys_mod.BASE_KEYS
    ]
    want += [
        getattr(keys, n)(board, gen, period) if "{period}" in t else getattr(keys, n)(board, gen)
        for n, t in keys_mod.GEN_KEYS.items()
    ]
    assert got == want
    assert len(set(got)) == len(got)


def test_no_script_restates_a_key_suffix_or_an_encoding_constant() -> None:
    literals = {str(scoring.TIME_SPAN), str(scoring.MAX_SCORE)}
    suffixes = {t.split("{")[0] for t in (*keys_mod.BASE_KEYS.values(), *keys_mod.GEN_KEYS.values())} - {":"}
    for path in resources.files("leaderboard").joinpath("lua").iterdir():
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())  # comments aside
        for literal in literals:
            assert literal not in code, f"{path.name} spells {literal}"
        for suffix in suffixes:
            assert f"'{suffix}" not in code, f"{path.name} builds a key with {suffix!r} itself"
    assert re.search(r"local SPAN = \d+", prelude())


# -- merge --------------------------------------------------------------------------------------------------

_event = st.tuples(
    st.integers(0, 3),  # player
    st.integers(0, 40).map(lambda n: n * 5400),  # seconds after BASE: few instants, ties and late arrivals
    st.sampled_from([0, 250_000]),
    st.sampled_from([0, 1, 7, 7, 300, scoring.MAX_SCORE]),  # ties and the bound
    st.integers(0, 2),  # partition
)


def _records(raw: list[tuple[int, int, int, int, int]]) -> list[Canonical]:
    offsets = [0, 0, 0]
    out = []
    for player, sec, us, value, part in raw:
        event = MatchWon(
            event_id=str(uuid.uuid4()),
            match_id="m",
            player_id=f"p{player}",
            game="g",
            score=value,
            occurred_at=BASE + timedelta(seconds=sec, microseconds=us),
        )
        out.append(Canonical(part, offsets[part], event))
        offsets[part] += 1
    return out


def _definition(board: Board, records: list[Canonical]) -> dict[str, dict[str, int]]:
    """Rule.merge one event at a time, in arrival order, then the encoding: the pure Python definition."""
    rule = board.rule
    out: dict[str, dict[str, list[int]]] = {}
    for rec in records:
        e = rec.event
        value = rule.value_of(e.points, e.score)
        assert value is not None
        for key in board.period_keys(e.occurred_at):
            new = rule.new(
                value, int(e.occurred_at.timestamp()), micros(e.occurred_at), rec.partition, rec.offset
            )
            cur = out.setdefault(key, {}).get(e.player_id)
            if cur is None:
                out[key][e.player_id] = new
            else:
                rule.merge(cur, new)
    result: dict[str, dict[str, int]] = {}
    for key, players in out.items():
        origin, unit = board.origin(key)
        result[key] = {
            p: rule.pack(
                v[0], scoring.tiebreak(scoring.time_units(datetime.fromtimestamp(v[1], UTC), origin, unit))
            )
            for p, v in players.items()
        }
    return result


def apply_in_batches(sink: RedisSink, records: list[Canonical], cuts: list[int]) -> None:
    """Apply ``records`` in batches of the sizes ``cuts`` cycles through, every third batch twice (a
    redelivery: the watermarks must skip it)."""
    i, k = 0, 0
    while i < len(records):
        batch = records[i : i + cuts[k % len(cuts)]]
        sink.apply(batch)
        if k % 3 == 1:
            sink.apply(batch)
        i += len(batch)
        k += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(_event, min_size=1, max_size=60),
    st.sampled_from(AGGREGATIONS),
    st.sampled_from(ORDERS),
    st.lists(st.integers(1, 20), min_size=1, max_size=8),
    st.integers(1, 30),
)
def test_apply_lua_merges_as_the_python_definition(
    config: Settings,
    redis_client: redis.Redis,
    raw: list[tuple[int, int, int, int, int]],
    agg: str,
    order: str,
    cuts: list[int],
    max_updates: int,
) -> None:
    board = Board(
        id=f"m{uuid.uuid4().hex[:8]}",
        aggregation=agg,  # type: ignore[arg-type]
        order=order,  # type: ignore[arg-type]
        value="score",
        periods=(PeriodKind.ALL_TIME, PeriodKind.DAILY),
    )
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, (board,), max_updates=max_updates)
    records = _records(raw)
    apply_in_batches(sink, records, cuts)
    for period, want in _definition(board, records).items():
        rows = redis_client.zrange(keys.board(board.id, 1, period), 0, -1, withscores=True)
        got = {m.decode(): int(s) for m, s in cast("list[tuple[bytes, float]]", rows)}
        assert got == want, period


@pytest.mark.parametrize("order", ORDERS)
def test_best_against_scores_already_in_redis(
    config: Settings, redis_client: redis.Redis, order: str
) -> None:
    """A best board's write (ZADD GT) against standings it did not write (a checkpoint load, say): a better
    value stays, a worse one is replaced, and of equal values the larger (earlier) tie-break stays."""
    board = Board(
        id=f"b{uuid.uuid4().hex[:8]}",
        aggregation="best",
        order=order,  # type: ignore[arg-type]
        value="score",
        periods=(PeriodKind.ALL_TIME,),
    )
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    at = BASE + timedelta(hours=1)
    records = [
        Canonical(
            0,
            i,
            MatchWon(
                event_id=str(uuid.uuid4()),
                match_id="m",
                player_id=f"p{i}",
                game="g",
                score=50,
                occurred_at=at,
            ),
        )
        for i in range(4)
    ]
    [period] = board.period_keys(at)
    fresh = scores(board, fold(board, records))[(period, 0)]
    _, tb = scoring.unpack(fresh["p0"])
    assert 0 < tb < scoring.TIME_SPAN - 1  # room for a smaller and a larger tie-break
    better, worse = (80, 20) if order == "desc" else (20, 80)
    rule = board.rule
    old = {
        "p0": rule.pack(better, 0),
        "p1": rule.pack(worse, scoring.TIME_SPAN - 1),
        "p2": rule.pack(50, scoring.TIME_SPAN - 1),
        "p3": rule.pack(50, 0),
    }
    zkey = keys.board(board.id, 1, period)
    redis_client.zadd(zkey, old)
    RedisSink(redis_client, keys, (board,)).apply(records)
    got = {
        m.decode(): int(s)
        for m, s in cast("list[tuple[bytes, float]]", redis_client.zrange(zkey, 0, -1, withscores=True))
    }
    assert got == {"p0": old["p0"], "p1": fresh["p1"], "p2": old["p2"], "p3": fresh["p3"]}


# -- around-me ----------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 4), min_size=1, max_size=25), st.integers(0, 12), st.data())
def test_read_around_window_is_ranking_window(
    config: Settings, redis_client: redis.Redis, values: list[int], radius: int, data: st.DataObject
) -> None:
    keys = Keys(config.redis_prefix)
    board = f"a{uuid.uuid4().hex[:8]}"
    zkey = keys.board(board, 1, "all_time")
    redis_client.hset(keys.meta(board), mapping={"active": 1, "writing": 1})
    redis_client.zadd(zkey, {f"p{i:02d}": scoring.pack(v, i % 3) for i, v in enumerate(values)})
    ordered = [m.decode() for m in cast("list[bytes]", redis_client.zrange(zkey, 0, -1, desc=True))]
    index = data.draw(st.integers(0, len(values) - 1))
    around = redis_client.register_script(script_text("around"))
    reply = json.loads(
        around(
            keys=[keys.meta(board), zkey, keys.stats(board, 1, "all_time"), keys.periods(board, 1)],
            args=[1, ordered[index], radius],
        )
    )
    first, last = ranking.window(index, len(values), radius)
    assert (reply["s"], reply["first"], reply["index"]) == ("ok", first, index)
    assert reply["rows"][0::2] == ordered[first : last + 1]
    redis_client.unlink(zkey, keys.meta(board))


@pytest.mark.parametrize("order", ORDERS)
def test_rank_keys_invert_within_the_bounds(order: str) -> None:
    rule = Rule(order=order)  # type: ignore[arg-type]
    for v in (0, 1, 7, scoring.MAX_SCORE):
        assert rule.value_of_key(rule.key(v)) == v
    assert rule.key(scoring.MAX_SCORE + 5) == rule.key(scoring.MAX_SCORE)  # a sum saturates
    better, worse = (9, 3) if order == "desc" else (3, 9)
    assert rule.key(better) > rule.key(worse)
    assert rule.key_range(3, 9) == tuple(sorted((rule.key(3), rule.key(9))))
