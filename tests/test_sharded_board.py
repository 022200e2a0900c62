"""A board split into shards answers exactly what the same board in one sorted set answers (real Redis).

The same events, in random batches with redeliveries, go through RedisSink to an unsharded board and to the
same board with ``shards = 3`` (three sorted sets per period, on three slots). Every read of the unsharded
board comes from the production read scripts (read_top/player/around/range/lookup.lua); the sharded one's
from leaderboard.shard_reads. Ties are frequent (few values and instants), every aggregation and order.
With LEADERBOARD_REDIS_CLUSTER=true the same runs on a cluster (the shards on their own slots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import boards as boards_mod
from leaderboard import catalog, shards
from leaderboard.aggregate import AGGREGATIONS, ORDERS
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from leaderboard.shard_reads import ShardedReads
from query_api.store import script_text
from schemas.model import MatchWon
from tests.test_lua_parity import apply_in_batches

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
SHARDS = 3

_event = st.tuples(
    st.integers(0, 24),  # player
    st.integers(0, 6).map(lambda n: n * 3600),  # few instants: tie-breaks collide
    st.sampled_from([1, 2, 2, 5, 9]),  # value: ties
    st.integers(0, 2),  # partition
)


def _records(raw: list[tuple[int, int, int, int]]) -> list[Canonical]:
    offsets = [0, 0, 0]
    out = []
    for player, sec, value, part in raw:
        event = MatchWon(
            event_id=str(uuid.uuid4()),
            match_id="m",
            player_id=f"p{player:02d}",
            game="g",
            score=value,
            occurred_at=BASE + timedelta(seconds=sec),
        )
        out.append(Canonical(part, offsets[part], event))
        offsets[part] += 1
    return out


def _rows(flat: Any) -> list[tuple[str, float]]:
    """A script reply's rows (member, score, ...); cjson encodes an empty array as {}."""
    items = list(flat) if isinstance(flat, list) else []
    return [(items[i], float(items[i + 1])) for i in range(0, len(items), 2)]


class Unsharded:
    """The production read scripts on one board of one shard."""

    def __init__(self, client: redis.Redis, keys: Keys, board: str) -> None:
        self._keys, self._board = keys, board
        self._scripts = {
            n: client.register_script(script_text(n)) for n in ("top", "player", "around", "range", "lookup")
        }

    def __call__(self, name: str, period: str, *args: str | int) -> dict[str, Any]:
        k, b = self._keys, self._board
        keys = [k.meta(b), k.board(b, 1, period), k.stats(b, 1, period), k.periods(b, 1)]
        return cast("dict[str, Any]", json.loads(self._scripts[name](keys=keys, args=[1, *args])))


# Shaped like test_lua_parity's merge test (strategy, _records, signature) on purpose: each property test
# draws its own events (here 4 fields: no microseconds, 25 players) and sizes.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(_event, min_size=1, max_size=80),
    st.sampled_from(AGGREGATIONS),
    st.sampled_from(ORDERS),
    st.lists(st.integers(1, 25), min_size=1, max_size=6),
    st.integers(1, 40),
)
def test_a_sharded_board_reads_as_the_unsharded_one(
    config: Settings,
    redis_client: redis.Redis,
    raw: list[tuple[int, int, int, int]],
    agg: str,
    order: str,
    cuts: list[int],
    max_updates: int,
) -> None:
    tag = uuid.uuid4().hex[:8]
    rule: dict[str, Any] = {"aggregation": agg, "order": order, "value": "score"}
    kinds = (PeriodKind.ALL_TIME, PeriodKind.DAILY)
    plain = Board(id=f"u{tag}", periods=kinds, **rule)
    split = Board(id=f"s{tag}", periods=kinds, shards=SHARDS, **rule)
    keys = Keys(config.redis_prefix)
    for board in (plain, *shards.parts(split)):
        redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, (plain, split), max_updates=max_updates)
    records = _records(raw)
    apply_in_batches(sink, records, cuts)  # redeliveries skipped per shard key by its watermarks

    one = Unsharded(redis_client, keys, plain.id)
    many = ShardedReads(redis_client, keys, split)
    periods = sorted(m.decode() for m in cast("set[bytes]", redis_client.smembers(keys.periods(plain.id, 1))))
    assert periods
    players = sorted({r.event.player_id for r in records})
    for period in periods:
        # Each player in the shard its id hashes to, and the shards together hold the whole board.
        stored = [
            {m.decode() for m in cast("list[bytes]", redis_client.zrange(keys.board(p.id, 1, period), 0, -1))}
            for p in shards.parts(split)
        ]
        for n, members in enumerate(stored):
            assert all(shards.shard_of(m, SHARDS) == n for m in members)
        whole = one("top", period, 0, 1000)
        assert set().union(*stored) == {m for m, _ in _rows(whole["rows"])}
        total = int(whole["total"])

        for offset, limit in ((0, 10), (0, 1), (3, 4), (total - 1, 5), (total + 2, 3)):
            want = one("top", period, max(offset, 0), limit)
            got = many.top(period, max(offset, 0), limit)
            assert (got.total, got.rows) == (total, _rows(want["rows"]))
            assert got.first_rank == int(want["first_rank"])

        for player in [*players, "nobody"]:
            want = one("player", period, player)
            got_player = many.player(period, player)
            if want["s"] == "missing":
                assert got_player is None
                assert many.around(period, player, 2) is None
                continue
            assert got_player is not None
            assert (got_player.score, got_player.rank, got_player.below, got_player.total) == (
                float(want["score"]),
                int(want["rank"]),
                int(want["below"]),
                total,
            )
            for radius in (0, 1, 2, 5):
                want = one("around", period, player, radius)
                window = many.around(period, player, radius)
                assert window is not None
                assert (window.first, window.index, window.first_rank, window.rows) == (
                    int(want["first"]),
                    int(want["index"]),
                    int(want["first_rank"]),
                    _rows(want["rows"]),
                ), (player, radius)

        scores = sorted({s for _, s in _rows(whole["rows"])})
        bounds = [(scores[0], scores[-1]), (scores[len(scores) // 2], scores[-1]), (scores[0], scores[0])]
        for lo, hi in bounds:
            for offset, limit in ((0, 5), (2, 3), (0, 100)):
                want = one("range", period, int(lo), int(hi), offset, limit)
                got_range = many.range(period, lo, hi, offset, limit)
                assert (got_range.matching, got_range.rows) == (int(want["matching"]), _rows(want["rows"]))
                assert (got_range.first_rank, got_range.first) == (
                    int(want["first_rank"]),
                    int(want["first"]),
                )

        ids = [*players[:7], "nobody", players[-1]]
        want = one("lookup", period, *ids)
        got_lookup = many.lookup(period, ids)
        want_scores = want["scores"] if isinstance(want["scores"], list) else []
        assert [s for s, _ in got_lookup] == [None if s is False else float(s) for s in want_scores]
        assert [r for _, r in got_lookup] == [int(r) for r in want["ranks"]]


def test_shards_hash_the_player_id_stably() -> None:
    """The same shard in every process (Python's own str hash differs per process), all shards used."""
    code = "from leaderboard.shards import shard_of; print([shard_of(f'p{i}', 3) for i in range(200)])"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert runs == {f"{[shards.shard_of(f'p{i}', 3) for i in range(200)]}\n"}
    assert {shards.shard_of(f"p{i}", 3) for i in range(200)} == {0, 1, 2}
    assert shards.shard_of("anyone", 1) == 0
    # Each shard's keys on a slot of its own, in its own 1/N of the slot space: a cluster whose masters hold
    # even slot ranges (redis-cli --cluster create) has every shard of a 3-shard board on another master.
    for board_id in ("g", "global", "chess", "x-1"):
        for n in (2, 3, 4, 7):
            ids = [p.id for p in shards.parts(Board(id=board_id, shards=n))]
            assert [i.split(".")[0] for i in ids] == [f"{board_id}~{k}" for k in range(n)]
            slots = [key_slot(Keys().meta(i).encode()) for i in ids]
            assert [s * n // 16384 for s in slots] == list(range(n)), (board_id, n, slots)
    assert shards.parts(Board(id="g")) == [Board(id="g")]


@pytest.mark.parametrize("bad", [0, -1, 65, "3", 2.0, True])
def test_shards_must_be_a_small_positive_integer(bad: object) -> None:
    with pytest.raises(boards_mod.BoardsError, match="shards must be an integer from 1 to 64"):
        boards_mod.parse({"id": "b", "shards": bad}, sharded=True)
    assert boards_mod.parse({"id": "b", "shards": 3}, sharded=True).shards == 3
    assert boards_mod.parse({"id": "b", "shards": 1}).shards == 1
    assert boards_mod.parse({"id": "b"}).shards == 1


def test_a_boards_file_may_shard_a_board_a_runtime_definition_may_not(tmp_path: Path) -> None:
    """The boards file is served sharded (tests/test_sharded_served.py); a board managed at runtime is built
    and activated as one sorted set per period, so its definitions (HTTP, ``boards apply``) refuse shards."""
    path = tmp_path / "boards.toml"
    path.write_text('[[board]]\nid = "big"\nshards = 3\n')
    assert [b.shards for b in boards_mod.load(path)] == [3]
    with pytest.raises(boards_mod.BoardsError, match="shards = 3: only a board of the boards file"):
        catalog.parse({"id": "b", "shards": 3})
    with pytest.raises(boards_mod.BoardsError, match="only a board of the boards file"):
        catalog.parse_file({"board": [{"id": "big", "shards": 3}]}, "a document")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t), min_size=1, max_size=30))
def test_postgresql_puts_every_player_in_the_shard_python_does(
    pg: psycopg.Connection, ids: list[str]
) -> None:
    """A rebuild and verify select a shard's checkpoint rows in SQL (shards.shard_sql): the same shard as
    the sink's shard_of, for any id (non-ASCII included: both hash the UTF-8 bytes)."""
    for n in (2, 3, 7, 64):
        got = pg.execute(
            f"SELECT {shards.shard_sql('p', n)} FROM unnest(%s::text[]) WITH ORDINALITY AS t(p, i)"
            " ORDER BY i",
            (ids,),
        ).fetchall()
        assert [int(r[0]) for r in got] == [shards.shard_of(i, n) for i in ids]


class _Counting:
    """The number of commands in each round trip a client makes: a pipeline's, 1 for a script called on
    its own (one node or a cluster: the client stays what it is, so the sink still sees which kind it is)."""

    def __init__(self, client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        make = client.pipeline
        evalsha = client.evalsha

        def alone(*args: Any, **kwargs: Any) -> Any:
            self.sizes.append(1)
            return evalsha(*args, **kwargs)

        monkeypatch.setattr(client, "evalsha", alone)

        def pipeline(transaction: bool = False) -> Any:
            pipe = make(transaction=transaction)
            real = pipe.execute

            def execute(raise_on_error: bool = True) -> list[object]:
                self.sizes.append(len(pipe))
                return cast("list[object]", real(raise_on_error))

            monkeypatch.setattr(pipe, "execute", execute)
            return pipe

        monkeypatch.setattr(client, "pipeline", pipeline)


def test_a_batch_is_one_pipeline_for_every_shard(
    config: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No round trip per event: a batch is one call per chunk and shard, ``calls_per_trip`` of them per round
    trip (so a reader waits behind that many calls at most)."""
    keys = Keys(config.redis_prefix)
    split = Board(id=f"s{uuid.uuid4().hex[:8]}", shards=SHARDS)
    for part in shards.parts(split):
        redis_client.hset(keys.meta(part.id), mapping={"active": 1, "writing": 1})
    counting = _Counting(redis_client, monkeypatch)
    sink = RedisSink(redis_client, keys, [split], calls_per_trip=SHARDS)
    records = _records([(p, 0, 1, p % 3) for p in range(300)])
    sink.apply(records[:100])  # the first batch also reads the shards' generations: one HGET per shard
    assert counting.sizes == [SHARDS, SHARDS]  # then one apply.lua call per shard (one chunk each here)
    sink.apply(records[100:200])
    assert counting.sizes == [SHARDS, SHARDS, SHARDS]
    one_by_one = RedisSink(redis_client, keys, [split], calls_per_trip=1)
    one_by_one.apply(records[200:])
    assert counting.sizes == [SHARDS, SHARDS, SHARDS, SHARDS, *[1] * SHARDS]
    monkeypatch.undo()
    reads = ShardedReads(redis_client, keys, split)
    assert reads.total("all_time") == 300
