"""The read API's test world: boards written through the real write path (RedisSink) into the real Redis,
a migrated PostgreSQL schema, and the app served by a TestClient. The ``world`` and ``api`` fixtures
(tests/conftest.py) build one per test; the helpers here are shared by the ``test_api_*`` modules and others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import redis
from fastapi.testclient import TestClient

from consumers.migrate import migrate
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from query_api.app import create_app
from schemas.model import MatchWon
from tests.factories import win

BOARDS = (
    Board(id="global"),
    Board(id="chess_daily", periods=(PeriodKind.DAILY, PeriodKind.ALL_TIME), games=frozenset({"chess"})),
)
DAY = "2026-11-28"
PROBLEM = "application/problem+json"


@dataclass
class World:
    """One test's boards: real RedisSink writes, a TestClient running the app's lifespan."""

    config: Settings
    redis: redis.Redis
    keys: Keys
    sink: RedisSink
    offsets: dict[int, int] = field(default_factory=dict)

    def wins(self, *events: MatchWon, partition: int = 0) -> None:
        start = self.offsets.get(partition, 0)
        self.sink.apply([Canonical(partition, start + i, e) for i, e in enumerate(events)])
        self.offsets[partition] = start + len(events)

    def names(self, **names: str) -> None:
        mapping: dict[Any, Any] = dict(names)
        self.redis.hset(self.keys.names(), mapping=mapping)

    def activate(self, *boards: str) -> None:
        for board in boards or [b.id for b in BOARDS]:
            self.redis.hset(self.keys.meta(board), mapping={"active": 1, "writing": 1})


def make_world(config: Settings, client: redis.Redis, pg: psycopg.Connection) -> World:
    """Migrated PostgreSQL schema and every board active at generation 1 (as a running consumer leaves it)."""
    migrate(pg)
    keys = Keys(config.redis_prefix)
    w = World(config, client, keys, RedisSink(client, keys, BOARDS))
    w.activate()
    return w


@contextmanager
def serving(config: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running (Redis and PostgreSQL clients open)."""
    with TestClient(create_app(config, BOARDS)) as client:
        yield client


def at(hhmm: str, day: str = DAY) -> str:
    return f"{day}T{hhmm}:00Z"


def ties(world: World) -> None:
    """p1 5 pts; p2 and p3 3 pts (p2 got there first); p4 1 pt -> ranks 1 2 2 4."""
    world.wins(
        win("p1", at("10:00"), 5),
        win("p3", at("10:01"), 1),
        win("p4", at("10:02"), 1),
        win("p2", at("10:05"), 3),
        win("p3", at("10:10"), 2),
    )
    world.names(p1="Ada", p2="Bob")


def problem_of(resp: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == PROBLEM
    doc: dict[str, Any] = resp.json()
    assert doc["type"] == f"/problems/{kind}"
    assert doc["status"] == status
    assert doc["title"]
    assert doc["detail"]
    return doc


def rows(doc: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(e["rank"], e["player_id"], e["score"]) for e in doc["entries"]]
