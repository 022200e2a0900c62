"""Every board kind (asc/desc x sum/best/last, ranked by points or by score) on every path that computes a
board, against a ground truth computed here from the definitions, with the real Redis and PostgreSQL.

One stream per kind: duplicates (same event_id at a later offset), ties (same value, same second, same
microsecond across partitions), late events (arrival order is not time order), events without a score and
scores past the bounds. Events go through the live PostgreSQL sink, so the canonical copies are decided as
the consumer decides them; then the live Redis apply (with a redelivered batch), the checkpoint fold (in two
steps), verify, the rebuild from the checkpoint, the close of a daily period with its announcement, and the
read API (ranks, order within ties, percentiles, around-me at both edges, score ranges, lookup, stats), live
and from the closed period's snapshot.
"""

from __future__ import annotations

import hashlib
import random
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from consumers import checkpoints, compare, period_store, pg_sink
from consumers.announce import announcement
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard import ranking, scoring
from leaderboard.boards import Board, Season
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from query_api.app import create_app
from schemas.model import MatchWon

MAXV = 536_870_911  # the documented per-board bound (docs/boards.md), written out: not imported
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
START = TODAY - timedelta(days=5)
DAY0 = f"daily:{START.date().isoformat()}"
PERIODS = (PeriodKind.ALL_TIME, PeriodKind.DAILY)

KINDS = [
    (agg, order, value)
    for agg in ("sum", "best", "last")
    for order in ("desc", "asc")
    for value in ("score",)
] + [("sum", "desc", "points"), ("best", "asc", "points")]


def _board(agg: str, order: str, value: str) -> Board:
    return Board(
        id=f"{agg}-{order}-{value}",
        aggregation=agg,  # type: ignore[arg-type]
        order=order,  # type: ignore[arg-type]
        value=value,  # type: ignore[arg-type]
        periods=PERIODS,
        grace_seconds=0,
    )


def _stream(seed: int, n: int = 300) -> list[Canonical]:
    rnd = random.Random(seed)
    out: list[Canonical] = []
    offsets = [0, 0, 0]
    seconds = [rnd.randrange(0, 3 * 86400) for _ in range(40)]  # few distinct instants: ties in time
    for _ in range(n):
        part = rnd.randrange(3)
        if out and rnd.random() < 0.1:
            event = rnd.choice(out).event  # a duplicate: the same event_id at a later offset
        else:
            at = START + timedelta(seconds=rnd.choice(seconds), microseconds=rnd.choice([0, 0, 250_000]))
            event = MatchWon(
                event_id=str(uuid.uuid4()),
                match_id="m",
                player_id=f"p{rnd.randrange(18):02d}",
                game="chess",
                points=rnd.choice([1, 1, 2, 3]),
                score=rnd.choice([None, 0, 7, 7, 40, 41, 90_000, MAXV, MAXV + 1, 2_147_483_647]),
                occurred_at=at,
            )
        out.append(Canonical(part, offsets[part], event))
        offsets[part] += 1
    return out


# -- the ground truth: straight from the definitions in the issue and docs/boards.md ----------------------


def truth(board: Board, canonical: list[Canonical]) -> dict[str, dict[str, tuple[int, int]]]:
    """period -> player -> (value, second the standing was reached)."""
    groups: dict[tuple[str, str], list[tuple[int, int, int, int, int]]] = defaultdict(list)
    for rec in canonical:
        e = rec.event
        v = e.points if board.value == "points" else e.score
        if v is None or v > MAXV:
            continue  # the board does not count it
        us = (e.occurred_at - EPOCH) // timedelta(microseconds=1)
        for key in board.period_keys(e.occurred_at):
            groups[(key, e.player_id)].append((v, us // 1_000_000, us, rec.partition, rec.offset))
    out: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    for (key, player), evs in groups.items():
        if board.aggregation == "sum":
            got = (min(sum(x[0] for x in evs), MAXV), max(x[1] for x in evs))
        elif board.aggregation == "best":
            top = max(x[0] for x in evs) if board.order == "desc" else min(x[0] for x in evs)
            got = (top, min(x[1] for x in evs if x[0] == top))  # first to reach it
        else:
            latest = max(evs, key=lambda x: (x[2], x[3], x[4]))  # occurred_at, then Kafka position
            got = (latest[0], latest[1])
        out[key][player] = got
    return dict(out)


def packed(board: Board, period: str, value: int, at_s: int) -> int:
    rank_key = value if board.order == "desc" else MAXV - value
    origin, unit = board.origin(period)
    tb = scoring.tiebreak(scoring.time_units(datetime.fromtimestamp(at_s, UTC), origin, unit))
    return rank_key * scoring.TIME_SPAN + tb


def standings(board: Board, period: str, want: dict[str, tuple[int, int]]) -> list[tuple[int, str, int]]:
    """(competition rank, player, value) in board order: better value first, then whoever reached it
    first, then (Redis' order for equal scores) player id descending bytewise."""
    ordered = sorted(want, key=lambda p: (packed(board, period, *want[p]), p.encode()), reverse=True)

    def better(a: int, b: int) -> bool:
        return a > b if board.order == "desc" else a < b

    return [(1 + sum(better(want[q][0], want[p][0]) for q in want), p, want[p][0]) for p in ordered]


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
def conn(config: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(config.database_url, autocommit=True) as c:
        migrate(c)
        yield c


def _zset(client: redis.Redis, keys: Keys, board: Board, period: str) -> dict[str, int]:
    gen = int(client.hget(keys.meta(board.id), "active") or 0)
    rows = cast(
        "list[tuple[bytes, float]]", client.zrange(keys.board(board.id, gen, period), 0, -1, withscores=True)
    )
    return {m.decode(): int(s) for m, s in rows}


def _rows(doc: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["player_id"], e["score"]) for e in doc["entries"]]


@pytest.mark.parametrize(("agg", "order", "value"), KINDS, ids=["-".join(k) for k in KINDS])
def test_every_path_agrees_with_the_definition(
    config: Settings, redis_client: redis.Redis, conn: psycopg.Connection, agg: str, order: str, value: str
) -> None:
    board = _board(agg, order, value)
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, (board,), max_updates=40)  # several chunks per batch
    records = _stream(seed=zlib.crc32(board.id.encode()))
    rnd = random.Random(7)

    # Live path: PostgreSQL decides canonical copies, Redis applies them; one batch is delivered twice.
    canonical: list[Canonical] = []
    i = 0
    batches = 0
    while i < len(records):
        batch = records[i : i + rnd.randint(10, 60)]
        i += len(batch)
        outcome = pg_sink.write_batch(conn, batch, (board,))
        sink.apply(outcome.canonical)
        if batches == 2:
            sink.apply(outcome.canonical)  # redelivery: watermarks make it a no-op
        canonical += outcome.canonical
        batches += 1
        if batches == 3:
            checkpoints.advance(conn, board)  # the checkpoint folds in two steps: its merge path runs too
    want = truth(board, canonical)
    assert DAY0 in want
    assert len(want["all_time"]) > 5
    for period, players in want.items():
        expect = {p: packed(board, period, *v) for p, v in players.items()}
        assert _zset(redis_client, keys, board, period) == expect, f"live {period}"

    # Checkpoint (SQL fold) and verify.
    checkpoints.advance(conn, board)
    rows: dict[tuple[str, str], int] = {}
    with conn.transaction():
        for chunk in checkpoints.stream_rows(conn, board.id):
            rows.update({(r.period, r.player_id): checkpoints.packed(board, r) for r in chunk})
    assert rows == {(k, p): packed(board, k, *v) for k, ps in want.items() for p, v in ps.items()}
    lines, compared = compare.differences(redis_client, conn, keys, board, None)
    assert (lines, compared) == ([], len(want))

    # Rebuild from the checkpoint into a new generation, flipped; then more live events on top of it.
    gens = Generations(redis_client, keys, (board,))
    lease = gens.lease(board.id)
    assert lease is not None
    gen, _ = rebuild_from_checkpoint(gens, sink, conn, board, lease)
    lease.release()
    assert gen == 2
    for period, players in want.items():
        expect = {p: packed(board, period, *v) for p, v in players.items()}
        assert _zset(redis_client, keys, board, period) == expect, f"rebuilt {period}"

    # The read API, live: every row of the all-time board, then per player, around-me at both edges.
    expected = standings(board, "all_time", want["all_time"])
    with TestClient(create_app(config, (board,))) as api:
        base = f"/v1/leaderboards/{board.id}"
        top = api.get(f"{base}/entries", params={"period": "all_time", "limit": 1000}).json()
        assert (top["source"], _rows(top)) == ("live", expected)
        total = len(expected)
        for rank, player, score in expected:
            doc = api.get(f"{base}/players/{player}", params={"period": "all_time"}).json()
            below = sum(1 for r, _, _ in expected if r > rank)
            assert (doc["rank"], doc["score"], doc["percentile"]) == (
                rank,
                score,
                ranking.percentile(below, total),
            )
        for index in (0, 1, total // 2, total - 2, total - 1):
            player = expected[index][1]
            doc = api.get(
                f"{base}/players/{player}/around", params={"period": "all_time", "radius": 3}
            ).json()
            lo, hi = ranking.window(index, total, 3)
            assert _rows(doc) == expected[lo : hi + 1]
            assert doc["player_index"] == index - lo
        values = sorted({s for _, _, s in expected})
        low, high = values[len(values) // 4], values[3 * len(values) // 4]
        ranged = api.get(
            f"{base}/players", params={"period": "all_time", "min_score": low, "max_score": high}
        )
        assert _rows(ranged.json()) == [e for e in expected if low <= e[2] <= high]
        some = [expected[-1][1], "nobody", expected[0][1]]
        found = api.post(
            f"{base}/players:lookup", params={"period": "all_time"}, json={"player_ids": some}
        ).json()
        assert (_rows(found), found["absent"]) == ([expected[0], expected[-1]], ["nobody"])
        stats = api.get(f"{base}/stats", params={"period": "all_time"}).json()
        assert (stats["players"], stats["top_score"]) == (total, expected[0][2])

        # Close the first day: its standings, its announcement, then served from the snapshot.
        day = standings(board, DAY0, want[DAY0])
        live_day = _rows(api.get(f"{base}/entries", params={"period": DAY0, "limit": 1000}).json())
        assert live_day == day
        assert period_store.freeze(conn, board.id, DAY0)
        checkpoints.advance(conn, board)
        assert period_store.store_standings(conn, board, DAY0) == len(day)
        stored = conn.execute(
            "SELECT rank, player_id, score FROM period_standings WHERE board = %s AND period = %s"
            " ORDER BY position",
            (board.id, DAY0),
        ).fetchall()
        assert [tuple(r) for r in stored] == day
        doc = announcement(conn, board, DAY0)
        assert doc is not None
        top_places = cast("list[dict[str, Any]]", doc["top"])
        assert [(t["rank"], t["player_id"], t["score"]) for t in top_places] == day
        redis_client.unlink(keys.board(board.id, gen, DAY0))  # retention over: PostgreSQL serves it
        snap = api.get(f"{base}/entries", params={"period": DAY0, "limit": 1000}).json()
        assert (snap["source"], _rows(snap)) == ("snapshot", day)
        for index in (0, len(day) - 1):
            rank, player, score = day[index]
            me = api.get(f"{base}/players/{player}", params={"period": DAY0}).json()
            below = sum(1 for r, _, _ in day if r > rank)
            assert (me["rank"], me["score"], me["percentile"]) == (
                rank,
                score,
                ranking.percentile(below, len(day)),
            )
            near = api.get(f"{base}/players/{player}/around", params={"period": DAY0, "radius": 2}).json()
            lo, hi = ranking.window(index, len(day), 2)
            assert _rows(near) == day[lo : hi + 1]
        snap_stats = api.get(f"{base}/stats", params={"period": DAY0}).json()
        assert snap_stats["top_score"] == day[0][2]


def test_the_fingerprint_of_a_board_of_before_is_unchanged_and_every_rule_change_refolds() -> None:
    plain = Board(id="global")
    # The fingerprint boards had before order, value and seasons existed: an upgrade refolds no checkpoint.
    for board in (plain, Board(id="b", aggregation="best", games=frozenset({"go"}))):
        assert checkpoints.fingerprint(board) == _old(board)
    variants = [
        Board(id="global", order="asc"),
        Board(id="global", value="score"),
        Board(id="global", aggregation="last"),
        Board(id="global", seasons=(Season("s1", TODAY - timedelta(days=9), TODAY),)),
    ]
    prints = {checkpoints.fingerprint(b) for b in [plain, *variants]}
    assert len(prints) == 1 + len(variants)


def _old(board: Board) -> str:
    """The fingerprint as it was computed before board kinds (consumers/checkpoints.py at d468391)."""
    parts = [
        board.aggregation,
        board.timezone.key,
        ",".join(sorted(k.value for k in board.periods)),
        *(",".join(sorted(s)) if s is not None else "*" for s in (board.games, board.modes, board.regions)),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
