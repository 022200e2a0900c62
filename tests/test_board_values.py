"""Boards that rank by the optional score, events that no board can count, and seasons.

- An event lacking the value a board ranks by (or past its bounds) is not counted on that board and is
  dead-lettered (``not_countable``) only if no board takes it; through the real consumer and Kafka.
- A season is a period like the others: folded, verified, closable, announced with its bounds, readable
  as ``season:<id>`` / ``season:previous``, and every period in the API carries its bounds.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from consumers import checkpoints, closing, compare, due, pg_sink
from consumers.announce import announcement
from consumers.clients import Clients
from consumers.close_period import _selected
from consumers.decoded import Record, mark_uncountable
from consumers.metrics import ConsumerMetrics
from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.processor import Processor
from consumers.redis_sink import RedisSink
from leaderboard import boards as boards_mod
from leaderboard.boards import Board, Season
from leaderboard.errors import UserError
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from query_api.app import create_app
from schemas.model import Invalid, MatchWon, Reason
from tests.factories import win
from tests.procs import read_topic, zscores

TRIALS = Board(
    id="laps",
    aggregation="best",
    order="asc",
    value="score",
    games=frozenset({"racing"}),
    periods=(PeriodKind.ALL_TIME,),
)
WINS = Board(id="wins", games=frozenset({"chess"}), periods=(PeriodKind.ALL_TIME,))


def _record(event: MatchWon, offset: int) -> Record:
    return Record("t", 0, offset, None, b"{}", 0, event)


def test_only_events_no_board_can_count_are_marked() -> None:
    lap = win("a", game="racing")
    lap_timed = MatchWon(**{**_fields(lap), "score": 61_250})
    too_big = MatchWon(**{**_fields(lap), "score": 600_000_000})
    chess = win("b", game="chess")
    poker = win("c", game="poker")  # no board's filter takes it: stored, not counted, as before
    out = mark_uncountable(
        [_record(e, i) for i, e in enumerate((lap, lap_timed, too_big, chess, poker))], (TRIALS, WINS)
    )
    reasons = [r.decoded.reason if isinstance(r.decoded, Invalid) else None for r in out]
    assert reasons == [Reason.NOT_COUNTABLE, None, Reason.NOT_COUNTABLE, None, None]
    detail = out[0].decoded.detail  # type: ignore[union-attr]
    assert "laps" in detail
    assert "score absent" in detail
    # A second board that takes racing events by points counts them all: nothing is dead-lettered.
    by_points = Board(id="racing-wins", games=frozenset({"racing"}))
    assert all(
        isinstance(r.decoded, MatchWon)
        for r in mark_uncountable([_record(e, i) for i, e in enumerate((lap, too_big))], (TRIALS, by_points))
    )


def _fields(event: MatchWon) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


def test_the_consumer_counts_scores_and_dead_letters_what_no_board_counts(
    config: Settings, redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sent: list[dict[str, Any]] = []

    def event(player: str, game: str, minute: int, **extra: Any) -> dict[str, Any]:
        body = {
            "event_id": str(uuid.uuid4()),
            "match_id": "m",
            "player_id": player,
            "game": game,
            "occurred_at": (now + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
            **extra,
        }
        sent.append(body)
        return body

    event("ann", "racing", 1, score=61_000)
    event("ann", "racing", 2, score=59_500)  # her best: lower is better
    event("bob", "racing", 3, score=59_500)  # tied, reached later: listed after ann
    event("cy", "racing", 4, score=70_000)
    event("dee", "racing", 5)  # no score: the only board taking racing cannot count it
    event("eve", "racing", 6, score=536_870_912)  # past the bound
    event("ann", "chess", 7)  # points board
    event("fay", "chess", 8, score=5)  # a score the points board ignores; counted by points
    producer = Producer({**config.kafka_common(), "enable.idempotence": True})
    for body in sent:
        producer.produce(config.topic, json.dumps(body).encode(), body["player_id"].encode())
    assert producer.flush(30) == 0

    processor = Processor(config, (TRIALS, WINS), ConsumerMetrics(), Clients.for_settings(config))
    processor.run(until_caught_up=True, timeout_s=60)

    letters = read_topic(config, config.dlq_topic)
    got = sorted((json.loads(v or b"{}")["player_id"], h["reason"]) for _, v, h in letters)
    assert got == [("dee", "not_countable"), ("eve", "not_countable")]
    keys = Keys(config.redis_prefix)
    laps = [
        (m.decode(), TRIALS.rule.unpack(s)[0])
        for m, s in reversed(zscores(redis_client, keys.board("laps", 1, "all_time")))
    ]
    assert laps == [("ann", 59_500), ("bob", 59_500), ("cy", 70_000)]
    wins = {
        m.decode(): WINS.rule.unpack(s)[0]
        for m, s in zscores(redis_client, keys.board("wins", 1, "all_time"))
    }
    assert wins == {"ann": 1, "fay": 1}
    with psycopg.connect(config.database_url) as conn:
        stored: dict[str, int | None] = dict(
            conn.execute("SELECT player_id, score FROM events WHERE game = 'chess'").fetchall()
        )
    assert stored == {"ann": None, "fay": 5}


# -- seasons -------------------------------------------------------------------------------------------


def test_a_season_is_folded_verified_closed_announced_and_served(
    config: Settings, redis_client: redis.Redis
) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    s1 = Season("s1", today - timedelta(days=6), today - timedelta(days=2, hours=12, minutes=15))
    s2 = Season("s2", today - timedelta(days=2), today + timedelta(days=30))
    board = Board(
        id="seasonal",
        aggregation="sum",
        periods=(PeriodKind.ALL_TIME,),
        seasons=(s1, s2),
        grace_seconds=600,
    )
    assert board == boards_mod.parse(
        {
            "id": "seasonal",
            "aggregation": "sum",
            "periods": ["all_time"],
            "grace_seconds": 600,
            "season": [
                {"id": "s1", "start": s1.start, "end": s1.end},
                {"id": "s2", "start": s2.start.isoformat(), "end": s2.end.isoformat()},
            ],
        }
    )
    keys = Keys(config.redis_prefix)
    redis_client.hset(keys.meta(board.id), mapping={"active": 1, "writing": 1})
    sink = RedisSink(redis_client, keys, (board,))
    at = [s1.start + timedelta(hours=1), s1.end - timedelta(seconds=1), s1.end, s2.start + timedelta(hours=1)]
    events = [win("ann", at[0], 3), win("bob", at[1], 5), win("ann", at[2], 7), win("bob", at[3], 1)]
    with psycopg.connect(config.database_url, autocommit=True) as conn:
        migrate(conn)
        outcome = pg_sink.write_batch(conn, [Canonical(0, i, e) for i, e in enumerate(events)], (board,))
        sink.apply(outcome.canonical)
        s1_board = {
            m.decode(): int(board.rule.unpack(s)[0])
            for m, s in zscores(redis_client, keys.board(board.id, 1, "season:s1"))
        }
        assert s1_board == {"ann": 3, "bob": 5}  # s1.end is exclusive: ann's 7 is outside both seasons
        checkpoints.advance(conn, board)
        assert compare.differences(redis_client, conn, keys, board, None) == ([], 3)  # all_time, s1, s2

        clock = s1.end + timedelta(seconds=600)
        assert due.select(board, ["all_time", "season:s1", "season:s2"], [], clock) == ["season:s1"]
        assert due.select(board, ["season:s1"], [], clock - timedelta(seconds=1)) == []
        assert closing.close_one(conn, board, "season:s1") == 2
        doc = announcement(conn, board, "season:s1")
        assert doc is not None
        assert (doc["start"], doc["end"]) == (_z(s1.start), _z(s1.end))
        top = cast("list[dict[str, Any]]", doc["top"])
        assert [(t["rank"], t["player_id"], t["score"]) for t in top] == [(1, "bob", 5), (2, "ann", 3)]

    with TestClient(create_app(config, (board,))) as api:
        listed = api.get("/v1/leaderboards").json()["boards"][0]
        assert listed["current"]["season"] == "season:s2"
        assert [s["period"] for s in listed["seasons"]] == ["season:s1", "season:s2"]
        page = api.get(f"/v1/leaderboards/{board.id}/entries", params={"period": "season:previous"}).json()
        assert page["period"] == "season:s1"
        assert (page["starts_at"], page["ends_at"], page["closes_at"]) == (
            _ms(s1.start),
            _ms(s1.end),
            _ms(s1.end + timedelta(seconds=600)),
        )
        assert [(e["rank"], e["player_id"], e["score"]) for e in page["entries"]] == [
            (1, "bob", 5),
            (2, "ann", 3),
        ]
        current = api.get(
            f"/v1/leaderboards/{board.id}/players/bob", params={"period": "season:current"}
        ).json()
        assert (current["period"], current["score"], current["ends_at"]) == ("season:s2", 1, _ms(s2.end))
        alltime = api.get(f"/v1/leaderboards/{board.id}/stats", params={"period": "all_time"}).json()
        assert (alltime["starts_at"], alltime["ends_at"], alltime["closes_at"]) == (None, None, None)
        unknown = api.get(f"/v1/leaderboards/{board.id}/entries", params={"period": "season:s9"})
        assert unknown.status_code == 400
        assert "season:s1, season:s2" in unknown.json()["detail"]
        listing = api.get(f"/v1/leaderboards/{board.id}/periods").json()
        closed = listing["closed"][0]
        assert (closed["period"], closed["ends_at"]) == ("season:s1", _ms(s1.end))
        assert {p["period"] for p in listing["live_periods"]} == {"all_time", "season:s1", "season:s2"}


def _z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _ms(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_close_period_selects_the_boards_defining_a_season() -> None:
    now = datetime(2027, 2, 1, tzinfo=UTC)
    s3 = Season("s3", datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC))
    seasonal = Board(id="seasonal", seasons=(s3,))
    plain = Board(id="plain")
    assert _selected((seasonal, plain), "season:s3", now) == ((seasonal,), "season:s3")
    assert _selected((seasonal, plain), "season:previous", now) == ((seasonal,), "season:s3")
    with pytest.raises(UserError, match="their seasons: season:s3"):
        _selected((seasonal, plain), "season:s4", now)
    assert _selected((seasonal, plain), "daily:2027-01-31", now) == ((seasonal, plain), "daily:2027-01-31")


def test_the_example_boards_file_parses_and_bad_definitions_name_the_field() -> None:
    example = boards_mod.load(Path(__file__).resolve().parent.parent / "docs" / "boards.example.toml")
    kinds = {b.id: (b.aggregation, b.order, b.value, [s.key for s in b.seasons]) for b in example}
    assert kinds["time-trial"] == ("best", "asc", "score", ["season:s3"])
    assert kinds["rating"] == ("last", "desc", "score", [])
    bad: dict[str, tuple[dict[str, object], str]] = {
        "order": ({"order": "up"}, "order must be 'desc' or 'asc', not 'up'"),
        "aggregation": ({"aggregation": "max"}, "aggregation must be 'sum' or 'best' or 'last'"),
        "value": ({"value": "kills"}, "value must be 'points' or 'score'"),
        "unaligned": (
            {"season": [{"id": "s1", "start": "2027-01-01T00:10:00Z", "end": "2027-02-01T00:00:00Z"}]},
            "season 's1': start must fall on a quarter hour",
        ),
        "empty": (
            {"season": [{"id": "s1", "start": "2027-02-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"}]},
            "start must be before end",
        ),
        "naive": ({"season": [{"id": "s1", "start": "2027-02-01T00:00:00", "end": "x"}]}, "with an offset"),
    }
    for name, (fields, message) in bad.items():
        with pytest.raises(boards_mod.BoardsError) as caught:
            boards_mod.parse({"id": "b", **fields})
        assert message in str(caught.value), name
