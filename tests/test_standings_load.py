"""PostgreSQL-scored checkpoint entries (checkpoints.stream_entries) through standings.lua, against the Python
reference (checkpoints.packed, plan.latest_mark): the rebuild's load and verify's check give exactly the
scores and marks the row-by-row path gives, for every aggregation and order, out-of-range values and
instants, and player ids with spaces and multi-byte characters; the check lists exactly what differs."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import cast

import psycopg
import pytest
import redis

from consumers import checkpoints
from consumers.migrate import migrate
from consumers.plan import latest_mark, origin_of
from leaderboard.aggregate import MAX_VALUE
from leaderboard.boards import Board, Season
from leaderboard.lua_scripts import script
from leaderboard.settings import Settings

NOW = datetime.now(UTC)
SEASON = Season("s1", NOW - timedelta(days=300), NOW + timedelta(days=100))  # a coarser tie-break unit
BOARDS = (
    Board(id="sum", seasons=(SEASON,)),
    Board(id="best-asc", aggregation="best", order="asc", seasons=(SEASON,)),
    Board(id="last", aggregation="last", value="score", seasons=(SEASON,)),
)
PLAYERS = ["p1", "with space", " lead and trail ", "ünïcødé 名前", "x" * 64, "7", "tab\\slash"]


def _rows(board: Board, rnd: random.Random) -> list[tuple[object, ...]]:
    rows = []
    for period in board.period_keys(NOW):
        origin, unit = origin_of(board, period)
        for i, player in enumerate(PLAYERS):
            points = rnd.choice([0, 1, 17, MAX_VALUE, MAX_VALUE + 1000, rnd.randrange(10**6)])
            at_s = rnd.choice([origin - 3600, origin, origin + unit * (1 << 25), int(NOW.timestamp()) - i])
            last = (at_s * 1_000_000 + i, i % 3, 1000 + i) if board.aggregation == "last" else (None,) * 3
            rows.append((board.id, period, player, points, at_s, 1 + i, *last))
    return rows


@pytest.mark.parametrize("board", BOARDS, ids=[b.id for b in BOARDS])
def test_entries_load_and_check_as_the_python_reference(
    config: Settings, redis_client: redis.Redis, pg: psycopg.Connection, board: Board
) -> None:
    migrate(pg)
    rnd = random.Random(board.id)
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO standings_checkpoint (board, period, player_id, points, at_s, events, last_us,"
            " last_partition, last_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            _rows(board, rnd),
        )
    standings = redis_client.register_script(script("standings"))
    with pg.transaction():
        expected = {
            (r.period, r.player_id): (checkpoints.packed(board, r), r.last)
            for chunk in checkpoints.stream_rows(pg, board.id)
            for r in chunk
        }
    held = ["7"]
    for period in board.period_keys(NOW):
        zkey, lkey = f"{config.redis_prefix}:{{t}}:z:{period}", f"{config.redis_prefix}:{{t}}:l:{period}"
        keys = [zkey, lkey] if board.aggregation == "last" else [zkey]
        with pg.transaction():  # a server-side cursor
            parts = list(checkpoints.stream_entries(pg, board, period, held, marks=True))
            check = [p.blob for p in checkpoints.stream_entries(pg, board, period, held)]
            assert sum(p.rows for p in parts) == len(PLAYERS) - 1
        assert sum(p.events for p in parts) == sum(1 + i for i, p in enumerate(PLAYERS) if p not in held)
        for part in parts:
            assert standings(keys=keys, args=["add", part.blob]) == part.rows
        members = cast("list[tuple[bytes, float]]", redis_client.zrange(zkey, 0, -1, withscores=True))
        got = {m.decode(): int(s) for m, s in members}
        want = {p: expected[(period, p)][0] for p in PLAYERS if p not in held}
        assert got == want
        if board.aggregation == "last":
            marks = cast("dict[bytes, bytes]", redis_client.hgetall(lkey))
            shown = {p: expected[(period, p)][1] for p in PLAYERS if p not in held}
            assert {k.decode(): v.decode() for k, v in marks.items()} == {
                p: latest_mark(last) for p, last in shown.items() if last is not None
            }
            assert None not in shown.values()

        # verify's check: equal sets list nothing; a changed score and a missing member are listed.
        assert [standings(keys=[zkey], args=["check", b]) for b in check] == [[len(PLAYERS) - 1]]
        changed, gone = PLAYERS[1], PLAYERS[3]
        redis_client.zadd(zkey, {changed: want[changed] + 1})
        redis_client.zrem(zkey, gone)
        res = standings(keys=[zkey], args=["check", check[0]])
        assert res[0] == len(PLAYERS) - 2
        listed = {
            (res[i].decode(), int(res[i + 1]), int(float(res[i + 2])) if res[i + 2] else None)
            for i in range(1, len(res), 3)
        }
        assert listed == {(changed, want[changed], want[changed] + 1), (gone, want[gone], None)}
