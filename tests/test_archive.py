"""`leaderboard archive` against the real PostgreSQL and Redis: dropping archived months changes no board
(all-time included), late events for them are too_old, and the archive files load back exactly."""

from __future__ import annotations

import csv
import gzip
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis

from consumers import archive, checkpoints, pg_sink
from consumers.closing import close_one
from consumers.compare import differences
from consumers.migrate import migrate
from consumers.plan import Canonical, canonical_rows, fold, scores
from consumers.redis_sink import RedisSink
from leaderboard.boards import Board
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from tests.factories import win
from tests.procs import leaderboard_cli, zscores

BOARD = Board(id="global")
DAYS = ("2026-04-10", "2026-05-20", "2026-06-05")


def boards_of(client: redis.Redis, keys: Keys) -> dict[str, list[tuple[bytes, float]]]:
    """Every sorted set of the board, members with scores, in Redis order."""
    out = {}
    for key in sorted(client.scan_iter(match=f"{keys.base(BOARD.id)}:*")):
        if client.type(key) == b"zset":
            out[key.decode()] = zscores(client, key.decode())
    return out


def rows(conn: psycopg.Connection, query: str) -> list[tuple[object, ...]]:
    return conn.execute(query).fetchall()


@pytest.fixture
def world(
    config: Settings, pg: psycopg.Connection, redis_client: redis.Redis
) -> tuple[Keys, list[Canonical]]:
    """Three months of wins applied through both sinks, as the consumer does; April and May closed."""
    migrate(pg)
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta(BOARD.id), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, [BOARD], max_updates=7)
    records = []
    for d, day in enumerate(DAYS):
        for i in range(30):
            at = f"{day}T{10 + i % 12:02d}:{i:02d}:00Z"
            records.append(Canonical(d, i, win(f"p{i % 9}", at, 1 + i % 4, display_name=f"P{i % 9}")))
    for i in range(0, len(records), 25):
        out = pg_sink.write_batch(pg, records[i : i + 25], [BOARD])
        sink.apply(out.canonical)
    return keys, records


def close_spring(pg: psycopg.Connection) -> None:
    for day in DAYS[:2]:
        for key in BOARD.period_keys(datetime.fromisoformat(f"{day}T12:00:00+00:00")):
            if key != "all_time":
                close_one(pg, BOARD, key)


def test_archive_drops_months_without_changing_a_board_and_restores_them(
    pg: psycopg.Connection, redis_client: redis.Redis, world: tuple[Keys, list[Canonical]], tmp_path: Path
) -> None:
    keys, records = world
    with pytest.raises(UserError, match="is not closed"):
        archive.archive(pg, [BOARD], archive.parse_month("2026-06"), tmp_path)
    close_spring(pg)
    assert differences(redis_client, pg, keys, BOARD, None)[0] == []
    boards = boards_of(redis_client, keys)
    events = rows(pg, "SELECT * FROM events ORDER BY event_id")
    standings = rows(pg, "SELECT * FROM period_standings ORDER BY board, period, position")
    closed = rows(pg, "SELECT * FROM closed_periods ORDER BY board, period")

    done = archive.archive(pg, [BOARD], archive.parse_month("2026-06"), tmp_path)

    assert [(f"{a.month:%Y-%m}", a.rows) for a in done] == [("2026-04", 30), ("2026-05", 30)]
    assert rows(pg, "SELECT floor FROM event_log_floor") == [(datetime(2026, 6, 1, tzinfo=UTC),)]
    assert rows(pg, "SELECT count(*) FROM events") == [(30,)]
    assert rows(pg, "SELECT count(*) FROM event_ids") == [(30,)]  # the dedupe key keeps the log's retention
    assert rows(pg, "SELECT to_regclass('events_2026_04'), to_regclass('events_2026_05')") == [(None, None)]
    assert rows(pg, "SELECT count(*) FROM closed_periods") == [(0,)]  # every closed period ended before June
    assert boards_of(redis_client, keys) == boards  # no board changed, all-time included
    # The truth verify computes, from the archive files plus what PostgreSQL still holds, equals every board.
    kept = canonical_rows(
        rows(
            pg,
            "SELECT event_id, match_id, player_id, game, mode, region, points, score, occurred_at,"
            " kafka_partition, kafka_offset FROM events",
        )
    )
    truth = fold(BOARD, [*archived_records(tmp_path), *kept], split_partitions=False)
    for (period, _), want in scores(BOARD, truth).items():
        have = {m.decode(): int(s) for m, s in boards[f"{keys.base(BOARD.id)}:g1:{period}"]}
        assert have == want, period
    # A late copy or a late event for an archived month is dead-lettered too_old; Redis stays as it was.
    late = [records[0], Canonical(0, 99, win("p1", "2026-05-31T23:00:00Z"))]
    out = pg_sink.write_batch(pg, late, [BOARD])
    assert ([c.offset for c in out.canonical], [o for _, o, _ in out.too_old]) == ([], [0, 99])

    for name in ("events_2026_05.csv.gz", "events_2026_04.csv.gz", "periods_before_2026_06.csv.gz"):
        archive.restore(pg, tmp_path / name)
    assert rows(pg, "SELECT * FROM events ORDER BY event_id") == events
    assert rows(pg, "SELECT * FROM period_standings ORDER BY board, period, position") == standings
    assert rows(pg, "SELECT * FROM closed_periods ORDER BY board, period") == closed
    assert rows(pg, "SELECT floor FROM event_log_floor") == [(datetime(2026, 4, 1, tzinfo=UTC),)]
    assert rows(pg, "SELECT count(*) FROM event_ids") == [(90,)]
    assert differences(redis_client, pg, keys, BOARD, None)[0] == []


def archived_records(folder: Path) -> list[Canonical]:
    out = []
    for path in sorted(folder.glob("events_*.csv.gz")):
        with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                event = win(
                    r["player_id"],
                    datetime.fromisoformat(r["occurred_at"]),
                    int(r["points"]),
                    game=r["game"],
                    event_id=r["event_id"],
                )
                out.append(Canonical(int(r["kafka_partition"]), int(r["kafka_offset"]), event))
    return out


def test_cli_refuses_the_current_month_and_restoring_out_of_order_in_one_line(
    config: Settings, world: tuple[Keys, list[Canonical]], pg: psycopg.Connection, tmp_path: Path
) -> None:
    del world
    now = datetime.now(UTC)
    this_month = f"{now:%Y-%m}"
    res = leaderboard_cli(
        config, "archive", "--before", f"{now.year + 1}-01", "--to", str(tmp_path), timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1
    assert "current month cannot be archived" in res.stderr, this_month
    close_spring(pg)
    ok = leaderboard_cli(config, "archive", "--before", "2026-06", "--to", str(tmp_path), timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "event log now starts at 2026-06" in ok.stdout
    wrong = leaderboard_cli(
        config, "archive", "--restore", str(tmp_path / "events_2026_04.csv.gz"), timeout=60
    )
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith("restore months newest first")
    assert "\n" not in wrong.stderr.strip()


def test_archive_refuses_months_a_checkpoint_does_not_cover_in_one_line(
    config: Settings, pg: psycopg.Connection, world: tuple[Keys, list[Canonical]], tmp_path: Path
) -> None:
    """An all-time board nobody folded yet: dropping April and May would lose its standings for good."""
    _, records = world
    close_spring(pg)  # folds the global board's checkpoint past every stored event
    totals = Board(id="totals", periods=(PeriodKind.ALL_TIME,))
    boards_file = tmp_path / "boards.toml"
    boards_file.write_text('[[board]]\nid = "global"\n\n[[board]]\nid = "totals"\nperiods = ["all_time"]\n')
    before = rows(pg, "SELECT * FROM events ORDER BY event_id")
    res = leaderboard_cli(
        replace(config, boards_file=boards_file),
        "archive",
        "--before",
        "2026-06",
        "--to",
        str(tmp_path / "a"),
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1, res.stderr
    assert "board totals: its checkpoint does not cover the events of 2026-04" in res.stderr
    assert rows(pg, "SELECT * FROM events ORDER BY event_id") == before  # nothing moved
    assert rows(pg, "SELECT floor FROM event_log_floor") == [(datetime(2020, 1, 1, tzinfo=UTC),)]
    assert not list((tmp_path / "a").glob("*.csv.gz"))

    checkpoints.advance(pg, totals)
    done = archive.archive(pg, [BOARD, totals], archive.parse_month("2026-06"), tmp_path / "a")
    assert [f"{a.month:%Y-%m}" for a in done] == ["2026-04", "2026-05"]
    # The totals board's all-time standings outlive the months: the checkpoint still holds every event.
    want = fold(totals, records, split_partitions=False)[("all_time", -1)].players
    with pg.transaction():
        have = {
            r.player_id: (r.points, r.events)
            for chunk in checkpoints.stream_rows(pg, totals.id, ["all_time"])
            for r in chunk
        }
    assert have == {p: (v[0], v[2]) for p, v in want.items()}


def test_an_archive_that_stopped_after_detaching_is_finished_by_the_next_run(
    pg: psycopg.Connection, world: tuple[Keys, list[Canonical]], tmp_path: Path
) -> None:
    del world
    close_spring(pg)
    april = rows(pg, "SELECT * FROM events WHERE occurred_at < '2026-05-01Z' ORDER BY event_id")
    with pg.transaction():  # step (1) of an archive that died before writing its file
        pg.execute("UPDATE event_log_floor SET floor = '2026-05-01Z'")
        pg.execute("ALTER TABLE events DETACH PARTITION events_2026_04")
    done = archive.archive(pg, [BOARD], archive.parse_month("2026-05"), tmp_path)
    assert [(f"{a.month:%Y-%m}", a.rows) for a in done] == [("2026-04", len(april))]
    assert rows(pg, "SELECT to_regclass('events_2026_04')") == [(None,)]
    archive.restore(pg, tmp_path / "events_2026_04.csv.gz")
    assert rows(pg, "SELECT * FROM events WHERE occurred_at < '2026-05-01Z' ORDER BY event_id") == april


def test_retention_cut_counts_whole_months_back_from_the_current_one() -> None:
    now = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    assert archive.retention_cut(now, 13) == datetime(2025, 11, 1, tzinfo=UTC)
    assert archive.retention_cut(now, 12) == datetime(2025, 12, 1, tzinfo=UTC)
    assert archive.retention_cut(datetime(2026, 1, 31, tzinfo=UTC), 1) == datetime(2025, 12, 1, tzinfo=UTC)
    assert archive.next_month(datetime(2026, 12, 1, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(UserError):
        archive.parse_month("2026-6")


def test_open_periods_before_the_cut_include_a_week_that_straddles_it() -> None:
    lo, cut = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    found = {key for key, _, _ in archive.open_periods_before(BOARD, lo, cut, {"daily:2026-05-31"})}
    assert "weekly:2026-W22" in found  # Monday 25 May - Sunday 31 May
    assert "weekly:2026-W18" in found  # Monday 27 April - 3 May: starts before lo, still needed
    assert "monthly:2026-05" in found
    assert "daily:2026-05-31" not in found  # closed
    assert "daily:2026-06-01" not in found
    assert not any(key == "all_time" for key in found)
