"""apply.lua against the real Redis: redelivery, overlapping batches and replays never double-count."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.commands.core import Script

from consumers.plan import Canonical, fold
from consumers.redis_sink import RedisLost, RedisSink, _fold_kept, chunks
from leaderboard import scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.factories import win
from tests.procs import zscores
from tests.services import RedisServer

BASE = datetime(2026, 11, 2, tzinfo=UTC)


def stream(n: int, seed: int) -> list[Canonical]:
    rnd = random.Random(seed)
    offsets: dict[int, int] = defaultdict(int)
    out = []
    for _ in range(n):
        part = rnd.randrange(3)
        out.append(
            Canonical(
                part,
                offsets[part],
                win(f"p{rnd.randrange(8)}", BASE + timedelta(minutes=rnd.randrange(5000)), rnd.randint(1, 9)),
            )
        )
        offsets[part] += 1
    return out


def truth(records: list[Canonical]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in records:
        out[r.event.player_id] += r.event.points
    return dict(out)


def board_points(client: redis.Redis, keys: Keys, board: str, period: str) -> dict[str, int]:
    gen = int(client.hget(keys.meta(board), "active") or 0)
    return {m.decode(): scoring.points_of(s) for m, s in zscores(client, keys.board(board, gen, period))}


@pytest.fixture
def sink(config: Settings, redis_client: redis.Redis) -> RedisSink:
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    return RedisSink(redis_client, keys, [Board(id="global")])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 20), min_size=1, max_size=12),
    rewinds=st.lists(st.integers(0, 30), max_size=6),
    budget=st.sampled_from([1, 3, 10, 1000]),
)
def test_any_batching_with_redelivery_and_rewinds_equals_the_truth(
    sink: RedisSink,
    redis_client: redis.Redis,
    config: Settings,
    seed: int,
    cuts: list[int],
    rewinds: list[int],
    budget: int,
) -> None:
    """Any cut into batches, zombies replaying older offsets over newer ones, and any chunk size per call."""
    keys = Keys(config.redis_prefix)
    sink = RedisSink(redis_client, keys, [Board(id="global")], max_updates=budget)
    for key in redis_client.scan_iter(match=f"{config.redis_prefix}:{{global}}:g1:*"):
        redis_client.delete(key)
    records = stream(120, seed)
    by_part: dict[int, list[Canonical]] = defaultdict(list)
    for r in records:
        by_part[r.partition].append(r)
    rnd = random.Random(seed)
    for _part, recs in by_part.items():
        pos = 0
        i = 0
        while pos < len(recs):
            size = cuts[i % len(cuts)]
            sink.apply(recs[pos : pos + size])
            if i < len(rewinds) and rnd.random() < 0.5:  # a zombie or a reset consumer replays older offsets
                back = max(0, pos - rewinds[i])
                sink.apply(recs[back : pos + size + rnd.randrange(3)])
            pos += size
            i += 1
        sink.apply(recs)  # a full replay of the partition changes nothing
    assert board_points(redis_client, keys, "global", "all_time") == truth(records)
    monthly = truth([r for r in records if r.event.occurred_at.month == 11])
    assert board_points(redis_client, keys, "global", "monthly:2026-11") == monthly


def test_missing_meta_reports_redis_lost(
    sink: RedisSink, redis_client: redis.Redis, config: Settings
) -> None:
    redis_client.delete(Keys(config.redis_prefix).meta("global"))
    with pytest.raises(RedisLost):
        sink.apply(stream(5, 1))


def test_ties_list_first_to_reach_first_and_share_a_competition_rank(
    sink: RedisSink, redis_client: redis.Redis, config: Settings
) -> None:
    keys = Keys(config.redis_prefix)
    sink.apply(
        [
            Canonical(0, 0, win("late", "2026-11-28T12:00:00Z", 5)),
            Canonical(0, 1, win("early", "2026-11-28T09:00:00Z", 5)),
            Canonical(0, 2, win("top", "2026-11-28T10:00:00Z", 9)),
            Canonical(0, 3, win("low", "2026-11-28T08:00:00Z", 1)),
        ]
    )
    key = keys.board("global", 1, "daily:2026-11-28")
    assert [m.decode() for m, _ in zscores(redis_client, key, reverse=True)] == [
        "top",
        "early",
        "late",
        "low",
    ]
    ranks = {
        p: int(redis_client.zcount(key, scoring.higher_than(pts), "+inf")) + 1
        for p, pts in (("top", 9), ("early", 5), ("late", 5), ("low", 1))
    }
    assert ranks == {"top": 1, "early": 2, "late": 2, "low": 4}


class _Flaky:
    """A Redis client whose round trips of script calls die once Redis has run ``ran`` of their commands
    (names and chunk calls): the trip that reaches it runs its first commands up to it, then the connection
    is lost before any reply - a crash between two chunks. (The sink's read of the boards' ``writing``
    generations before it goes through.) ``trips`` counts the round trips that carried script calls."""

    def __init__(self, client: redis.Redis, ran: int) -> None:
        self._client = client
        self.ran = ran
        self.landed = 0
        self.trips = 0
        self.dead = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def register_script(self, text: str) -> Script:
        self._client.script_load(text)  # loaded: no NOSCRIPT retry to count as a second trip
        return Script(self, text)  # type: ignore[arg-type]  # so that a call on its own comes through evalsha below

    def evalsha(self, *args: Any) -> Any:
        """A script called on its own: a round trip of one command."""
        if self.dead:
            return self._client.evalsha(*args)
        self.trips += 1
        if self.landed + 1 < self.ran:
            self.landed += 1
            return self._client.evalsha(*args)
        if self.landed < self.ran:
            self._client.evalsha(*args)
        self.landed, self.dead = self.ran, True
        raise redis.ConnectionError("injected: connection lost between chunks")

    def pipeline(self, transaction: bool = False) -> object:
        pipe = self._client.pipeline(transaction=transaction)
        if self.dead:
            return pipe
        real = pipe.execute

        def execute(raise_on_error: bool = True) -> list[object]:
            if not any(args[0] in {"EVAL", "EVALSHA"} for args, _ in pipe.command_stack):
                return real(raise_on_error)
            self.trips += 1
            if self.landed + len(pipe.command_stack) < self.ran:
                self.landed += len(pipe.command_stack)
                return real(raise_on_error)
            del pipe.command_stack[self.ran - self.landed :]
            self.landed, self.dead = self.ran, True
            if pipe.command_stack:
                real(raise_on_error)
            raise redis.ConnectionError("injected: connection lost between chunks")

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    first=st.integers(1, 12),
    retry=st.integers(1, 40),
    ran=st.integers(0, 60),
    per_trip=st.sampled_from([1, 3, 10**6]),
)
def test_failure_between_chunks_then_retry_counts_every_event_once(
    redis_client: redis.Redis,
    config: Settings,
    seed: int,
    first: int,
    retry: int,
    ran: int,
    per_trip: int,
) -> None:
    """A batch cut into chunks of ``first`` updates, sent ``per_trip`` calls per round trip, dies after Redis
    ran ``ran`` of its calls; the retry (cut differently) and a replay of the whole batch leave every board
    equal to the truth, and no watermark ever moves backwards."""
    keys = Keys(config.redis_prefix)
    for key in redis_client.scan_iter(match=f"{config.redis_prefix}:{{global}}:g1:*"):
        redis_client.delete(key)
    redis_client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
    boards = [Board(id="global")]
    records = stream(120, seed)
    calls = len(chunks(boards[0], sorted(records, key=_key), first))  # one call per chunk
    flaky = _Flaky(redis_client, min(ran, calls))
    broken = RedisSink(flaky, keys, boards, max_updates=first, calls_per_trip=per_trip)  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError, match="injected"):
        broken.apply(records)
    assert flaky.landed == min(ran, calls)
    assert flaky.trips == max(1, -(-min(ran, calls) // per_trip))  # trips until the one that reached it
    marks_before = watermarks(redis_client, keys)
    healthy = RedisSink(redis_client, keys, boards, max_updates=retry)
    healthy.apply(records)
    for slot, mark in watermarks(redis_client, keys).items():
        assert mark >= marks_before.get(slot, -1)
    healthy.apply(records)  # a replay of the whole batch changes nothing
    assert board_points(redis_client, keys, "global", "all_time") == truth(records)
    weekly = truth([r for r in records if r.event.occurred_at < datetime(2026, 11, 9, tzinfo=UTC)])
    assert board_points(redis_client, keys, "global", "weekly:2026-W45") == weekly


def _key(rec: Canonical) -> tuple[int, int]:
    return rec.partition, rec.offset


def watermarks(client: redis.Redis, keys: Keys) -> dict[tuple[str, str], int]:
    out = {}
    for key in client.scan_iter(match=f"{keys.base('global')}:g1:wm:*"):
        marks = cast("dict[bytes, bytes]", client.hgetall(key))
        for part, mark in marks.items():
            out[(key.decode(), part.decode())] = int(mark)
    return out


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(1, 50))
def test_chunks_keep_offset_order_and_bound_the_updates_of_every_call(seed: int, budget: int) -> None:
    board = Board(id="global")
    records = sorted(stream(150, seed), key=_key)
    parts = chunks(board, records, budget)
    assert [r for c in parts for r in c] == records  # every record once, in (partition, offset) order
    for chunk in parts:
        updates = sum(len(slot.players) for slot in fold(board, chunk).values())
        assert updates <= budget or len(chunk) == 1
    assert len(parts) > 1 or sum(len(s.players) for s in fold(board, records).values()) <= budget


def test_a_restarted_redis_gets_the_script_again_before_the_bare_trips() -> None:
    """Only a batch's first trip lets redis-py check and load apply.lua; the later ones send bare EVALSHAs.
    After a Redis restart (data back from the AOF, scripts gone) a batch of many trips still lands."""
    keys = Keys("restart")
    board = Board(id="global")
    records = stream(60, 7)
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        client.hset(keys.meta("global"), mapping={"active": 1, "writing": 1})
        sink = RedisSink(client, keys, [board], max_updates=2, calls_per_trip=2)
        sink.apply(records[:30])
        client.close()
        server.stop()
        server.start()
        assert not client.script_exists(sink._apply.sha)[0]
        sink.apply(records[30:])
        assert len(chunks(board, sorted(records[30:], key=_key), 2)) > 4  # several bare trips
        assert board_points(client, keys, "global", "all_time") == truth(records)
        client.close()


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), budget=st.integers(1, 50))
def test_a_keep_that_keeps_everything_folds_as_no_keep(seed: int, budget: int) -> None:
    """Why the processor passes no ``keep`` when nothing is moderated, and why ``_fold_kept`` stops early
    when every record counts: the payloads are the same as with a predicate that keeps them all."""
    board = Board(id="global")
    for part in chunks(board, sorted(stream(150, seed), key=_key), budget):
        assert _fold_kept(board, part, lambda _b, _r: True) == fold(board, part)
