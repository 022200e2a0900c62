"""verify's comparison against real Redis and PostgreSQL: a board rebuilt from the checkpoint compares equal,
and every kind of difference is reported (wrong score, missing member, member PostgreSQL does not know)."""

from __future__ import annotations

import random

import psycopg
import pytest
import redis

from consumers import checkpoints, closing, period_store, pg_sink
from consumers.compare import VERIFIED, differences
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.lease import Lease
from consumers.migrate import migrate
from consumers.moderation_apply import replace_closed
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.procs import zscores
from tests.test_checkpoints import _records

BOARD = Board(id="global")


def _load(pg: psycopg.Connection, records: list[Canonical]) -> None:
    for i in range(0, len(records), 500):
        pg_sink.write_batch(pg, records[i : i + 500], (BOARD,))


def test_verify_reports_each_kind_of_difference(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(pg)
    keys = Keys(config.redis_prefix)
    rnd = random.Random(5)
    _load(pg, _records(rnd, 3000, partitions=3))
    gens = Generations(redis_client, keys, (BOARD,))
    lease = Lease.take(redis_client, keys.lock(BOARD.id))
    assert lease is not None
    with lease:
        gen, written = rebuild_from_checkpoint(
            gens, RedisSink(redis_client, keys, (BOARD,)), pg, BOARD, lease
        )
    assert written.entries > 30
    lines, compared = differences(redis_client, pg, keys, BOARD, None)
    assert lines == []
    assert compared == len(checkpoints.periods_of(pg, BOARD.id)) > 3

    zkey = keys.board(BOARD.id, gen, "all_time")
    top = zscores(redis_client, zkey, reverse=True)
    (first, score), (second, _) = top[0], top[1]
    redis_client.zadd(zkey, {first: score + scoring.TIME_SPAN})  # one point too many
    redis_client.zrem(zkey, second)
    redis_client.zadd(zkey, {"ghost": scoring.pack(3, 0)})
    monkeypatch.setattr(checkpoints, "CHUNK", 7)  # many small chunks: differences across chunk borders
    monkeypatch.setattr(checkpoints, "ENTRIES", 7)
    lines, _ = differences(redis_client, pg, keys, BOARD, "all_time")
    text = "\n".join(lines)
    assert len(lines) == 3, text
    assert f"global all_time {first.decode()}: Redis" in text
    assert f"global all_time {second.decode()}: missing in Redis" in text
    assert "global all_time ghost: in Redis (3), not in PostgreSQL" in text


def test_verify_streams_a_closed_periods_redis_copy_against_its_stored_standings(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy a close leaves in Redis is compared with period_standings chunk by chunk (tie-breaks
    included), every kind of difference named against the stored standings; whole once per version,
    by its size in later runs, whole again with recheck_closed or after a correction."""
    migrate(pg)
    keys = Keys(config.redis_prefix)
    _load(pg, _records(random.Random(9), 3000, partitions=3))
    gens = Generations(redis_client, keys, (BOARD,))
    lease = Lease.take(redis_client, keys.lock(BOARD.id))
    assert lease is not None
    with lease:
        gen, _ = rebuild_from_checkpoint(gens, RedisSink(redis_client, keys, (BOARD,)), pg, BOARD, lease)
    period = max(
        (p for p in checkpoints.periods_of(pg, BOARD.id) if p.startswith("daily:")),
        key=lambda p: redis_client.zcard(keys.board(BOARD.id, gen, p)),
    )
    zkey = keys.board(BOARD.id, gen, period)
    assert redis_client.zcard(zkey) > 10
    assert closing.close_one(pg, BOARD, period) == redis_client.zcard(zkey)
    monkeypatch.setattr(checkpoints, "ENTRIES", 7)  # many small chunks: differences across chunk borders
    assert differences(redis_client, pg, keys, BOARD, period)[0] == []
    assert redis_client.hget(keys.stats(BOARD.id, gen, period), VERIFIED) == b"1"
    # A correction rewrites the copy from Python's scoring of the same rows: the SQL one agrees with it.
    replace_closed(redis_client, keys, BOARD, period, period_store.redis_scores(pg, BOARD, period))
    assert differences(redis_client, pg, keys, BOARD, period, recheck_closed=True)[0] == []

    top = zscores(redis_client, zkey, reverse=True)
    (first, score), (second, _), (third, third_score) = top[0], top[1], top[2]
    redis_client.zadd(zkey, {first: score + scoring.TIME_SPAN})  # one point too many
    redis_client.zadd(zkey, {third: third_score + 1})  # same points, an earlier tie-break
    # Compared equal at version 1 already: a later run checks the copy's size only, which still matches.
    assert differences(redis_client, pg, keys, BOARD, period)[0] == []
    redis_client.zrem(zkey, second)
    lines, _ = differences(redis_client, pg, keys, BOARD, period)
    size = len(top) - 1
    assert lines == [f"global {period}: Redis holds {size} players, the stored standings {len(top)} (closed)"]
    redis_client.zadd(zkey, {"ghost": scoring.pack(3, 0)})
    for recheck in (True, False):
        if not recheck:  # a correction bumps the version: the next run compares the copy whole
            pg.execute("UPDATE closed_periods SET version = version + 1 WHERE period = %s", (period,))
        lines, _ = differences(redis_client, pg, keys, BOARD, period, recheck_closed=recheck)
        text = "\n".join(lines)
        assert len(lines) == 4, text
        assert f"global {period} {first.decode()}: Redis" in text
        assert f"global {period} {third.decode()}: Redis" in text
        assert text.count("!= stored standings") == 2, text
        assert f"global {period} {second.decode()}: missing in Redis" in text
        assert f"global {period} ghost: in Redis (3), not in stored standings" in text
