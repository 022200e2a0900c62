"""M2 (and the paths of M1): moderation honoured by every path that computes a board, against the real
PostgreSQL and Redis.

Random interleavings of event batches and actions (exclude, reinstate, void by event / match / window,
unvoid, erase) go through the consumer's own batch steps (``moderation_apply.sync``, ``pg_sink``,
``RedisSink.apply`` with the view's predicate); after every step the live boards must equal an
independent fold of the raw events minus what the accepted actions moderate (the oracle below shares no
code with leaderboard.moderation.view). At the end the other paths must give the same boards: verify's
comparison (checkpoint refold), a rebuild from the checkpoint, and a rebuild after Redis lost its keys.
Kafka end to end (live consumer process, ``rebuild --from kafka``, offset reset): test_moderation_live.py.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import redis

from consumers import checkpoints, compare, pg_sink
from consumers.generations import Generations, rebuild_from_checkpoint
from consumers.migrate import migrate
from consumers.moderation_apply import Recomputer, sync
from consumers.plan import Canonical
from consumers.redis_sink import RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.moderation import rules, service
from leaderboard.moderation.view import View, pseudonymised
from leaderboard.periods import PeriodKind
from leaderboard.settings import Settings
from schemas import moderation as m
from schemas.model import MatchWon
from tests.procs import zscores
from tests.test_moderation import action

PERIODS = (PeriodKind.ALL_TIME, PeriodKind.MONTHLY, PeriodKind.DAILY)
BOARDS = (Board(id="sum", periods=PERIODS), Board(id="best", periods=PERIODS, aggregation="best"))
KINDS = (
    # lower is better, ranked by the optional score (events without one do not count there)
    Board(id="lap", periods=PERIODS, aggregation="best", order="asc", value="score"),
    Board(id="strokes", periods=PERIODS, order="asc"),  # an ascending sum
    Board(id="last", periods=PERIODS, aggregation="last"),  # the latest event's value
)
"""Board kinds (issue 16) under the same interleavings: asc order, the score value, ``last``."""
BOARD_IDS = frozenset(b.id for b in BOARDS)
PARTITIONS = 4
START = (datetime.now(UTC) - timedelta(days=12)).replace(hour=0, minute=0, second=0, microsecond=0)
SPAN_S = 6 * 86400


# -- the oracle: raw events, accepted actions, and a fold that shares nothing with the product -----------


@dataclass
class Truth:
    boards_: tuple[Board, ...] = BOARDS
    events: dict[str, MatchWon] = field(default_factory=dict)
    """event_id -> the first copy (a copy sent again is a duplicate)."""
    at: dict[str, tuple[int, int]] = field(default_factory=dict)
    """event_id -> (partition, offset) of the first copy (``last`` ties on an instant go to the later)."""
    holds: dict[str, set[str]] = field(default_factory=dict)
    voids: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """active void action_id -> ("events", ids) | ("matches", ids) | ("window", (player, start, end))."""
    erased: set[str] = field(default_factory=set)

    def counted(self, e: MatchWon, board: str) -> bool:
        if e.player_id in self.erased:
            return False
        held = self.holds.get(e.player_id, set())
        if "*" in held or board in held:
            return False
        for kind, what in self.voids.values():
            if kind == "events" and e.event_id in what:
                return False
            if kind == "matches" and e.match_id in what:
                return False
            if kind == "window" and what[0] == e.player_id and what[1] <= e.occurred_at < what[2]:
                return False
        return True

    def add(self, e: MatchWon, partition: int, offset: int) -> None:
        if e.event_id not in self.events:
            self.events[e.event_id] = e
            self.at[e.event_id] = (partition, offset)

    def boards(self) -> dict[tuple[str, str], dict[str, int]]:
        """Per (board, period) the player's value, restated from docs/boards.md: sum adds, best keeps the
        highest (lowest on asc boards), last the latest event by occurred_at then Kafka position."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        latest: dict[tuple[str, str, str], tuple[datetime, tuple[int, int]]] = {}
        for board in self.boards_:
            for e in self.events.values():
                value = e.points if board.value == "points" else e.score
                if value is None or not self.counted(e, board.id):
                    continue
                for period in board.period_keys(e.occurred_at):
                    scores = out.setdefault((board.id, period), {})
                    have = scores.get(e.player_id)
                    if have is None:
                        scores[e.player_id] = value
                    elif board.aggregation == "sum":
                        scores[e.player_id] = have + value
                    elif board.aggregation == "best":
                        scores[e.player_id] = min(have, value) if board.order == "asc" else max(have, value)
                    if board.aggregation == "last":
                        mark = (e.occurred_at, self.at[e.event_id])
                        seen = latest.get((board.id, period, e.player_id))
                        if seen is None or mark > seen:
                            latest[(board.id, period, e.player_id)] = mark
                            scores[e.player_id] = value
        return out


# -- the consumer's batch steps, in process ---------------------------------------------------------------


class Live:
    def __init__(
        self, config: Settings, conn: psycopg.Connection, client: redis.Redis, boards: tuple[Board, ...]
    ) -> None:
        self.config, self.conn, self.client, self.boards_ = config, conn, client, boards
        self.keys = Keys(config.redis_prefix)
        self.sink = RedisSink(client, self.keys, boards)
        self.gens = Generations(client, self.keys, boards)
        self.recomputer = Recomputer(client, self.keys, boards)
        self.view: View | None = None
        self.offsets = [0] * PARTITIONS

    def rebuild(self) -> None:
        for board in self.boards_:
            lease = self.gens.lease(board.id)
            assert lease is not None
            try:
                rebuild_from_checkpoint(self.gens, self.sink, self.conn, board, lease)
            finally:
                lease.release()

    def moderate(self) -> View:
        self.view = sync(self.conn, self.recomputer, self.view)
        return self.view

    def batch(self, events: list[MatchWon], truth: Truth | None = None) -> None:
        """One batch through the consumer's steps; ``truth`` learns each event's first copy and position."""
        view = self.moderate()
        records = []
        for e in events:
            p = sum(e.player_id.encode()) % PARTITIONS  # one partition per player, like the key
            records.append(Canonical(p, self.offsets[p], pseudonymised(view, e)))
            if truth is not None:
                truth.add(e, p, self.offsets[p])
            self.offsets[p] += 1
        outcome, refused = pg_sink.write_isolating(self.conn, records, self.boards_)
        assert not refused
        self.sink.apply(outcome.canonical, keep=lambda b, r: view.counts(r.event, b.id))

    def boards(self) -> dict[tuple[str, str], dict[str, int]]:
        out = {}
        for board in self.boards_:
            gen = int(self.client.hget(self.keys.meta(board.id), "active") or -1)
            for raw in self.client.smembers(self.keys.periods(board.id, gen)):
                period = raw.decode() if isinstance(raw, bytes) else str(raw)
                rows = zscores(self.client, self.keys.board(board.id, gen, period))
                if rows:
                    out[(board.id, period)] = {k.decode(): board.rule.unpack(s)[0] for k, s in rows}
        return out


# -- random interleavings ---------------------------------------------------------------------------------


def submit(config: Settings, truth: Truth, doc: dict[str, Any]) -> str | None:
    """Take an action through the product's own service; mirror it into the oracle only if accepted."""
    doc = {"action_id": str(uuid.uuid4()), "actor": "test", "reason": "random", **doc}
    doc.setdefault("at", m.utc_text(datetime.now(UTC)))
    action = m.validate(doc)
    try:
        service.submit(config, action, frozenset(b.id for b in truth.boards_))
    except rules.Refused:
        return None
    kind, aid = str(doc["kind"]), str(doc["action_id"])
    player = str(doc.get("player_id"))
    if kind == "exclude":
        boards = {"*"} if doc["boards"] == "all" else set(doc["boards"])
        truth.holds[player] = {"*"} if "*" in boards else truth.holds.get(player, set()) | boards
    elif kind == "reinstate":
        if doc["boards"] == "all":
            truth.holds.pop(player, None)
        else:
            truth.holds[player] -= set(doc["boards"])
    elif kind == "void":
        if "event_ids" in doc:
            truth.voids[aid] = ("events", set(doc["event_ids"]))
        elif "match_ids" in doc:
            truth.voids[aid] = ("matches", set(doc["match_ids"]))
        else:
            truth.voids[aid] = ("window", (player, m.instant(doc["from"]), m.instant(doc["until"])))
    elif kind == "unvoid":
        truth.voids.pop(doc["target"])
    elif kind == "erase":
        truth.erased.add(player)
        truth.holds.pop(player, None)
    return aid


def random_action(rnd: random.Random, truth: Truth, players: list[str]) -> dict[str, Any]:
    known = sorted({e.player_id for e in truth.events.values()} - truth.erased)
    player = rnd.choice(known)
    roll = rnd.random()
    if roll < 0.25:
        ids = sorted(b.id for b in truth.boards_)
        boards: Any = "all" if rnd.random() < 0.4 else [rnd.choice(ids)]
        return {"kind": "exclude", "player_id": player, "boards": boards}
    if roll < 0.45 and truth.holds:
        held = rnd.choice(sorted(truth.holds))
        mine = truth.holds[held]
        boards = "all" if "*" in mine or rnd.random() < 0.5 or not mine else sorted(mine)[:1]
        return {"kind": "reinstate", "player_id": held, "boards": boards}
    if roll < 0.55:
        ids = rnd.sample(sorted(truth.events), min(3, len(truth.events)))
        return {"kind": "void", "event_ids": ids}
    if roll < 0.65:
        matches = sorted({e.match_id for e in truth.events.values()})
        return {"kind": "void", "match_ids": rnd.sample(matches, min(2, len(matches)))}
    if roll < 0.78:
        start = START + timedelta(seconds=rnd.randrange(SPAN_S))
        until = start + timedelta(seconds=rnd.randrange(3600, 2 * 86400))
        return {"kind": "void", "player_id": player, "from": m.utc_text(start), "until": m.utc_text(until)}
    if roll < 0.95 and truth.voids:
        return {"kind": "unvoid", "target": rnd.choice(sorted(truth.voids))}
    if roll < 0.97 and not truth.erased:
        return {"kind": "erase", "player_id": player}
    return {"kind": "exclude", "player_id": player, "boards": "all"}


def random_events(rnd: random.Random, players: list[str], sent: list[MatchWon]) -> list[MatchWon]:
    out = []
    for _ in range(rnd.randint(3, 25)):
        if sent and rnd.random() < 0.05:
            out.append(rnd.choice(sent))  # the same event again: a duplicate
            continue
        out.append(
            MatchWon(
                event_id=str(uuid.uuid4()),
                match_id=f"m{rnd.randrange(15)}",
                player_id=rnd.choice(players),
                game="chess",
                points=rnd.randint(1, 9),
                score=None if rnd.random() < 0.15 else rnd.randint(0, 400),
                # whole 10 minutes: a player's events share instants at times (``last`` ties by position)
                occurred_at=START + timedelta(seconds=600 * rnd.randrange(SPAN_S // 600)),
                display_name="someone",
            )
        )
    sent.extend(out)
    return out


def assert_same(
    have: dict[tuple[str, str], dict[str, int]], want: dict[tuple[str, str], dict[str, int]], what: str
) -> None:
    """Equal boards, or an error naming each (board, period, player) that differs."""
    diff = [
        f"{key} {p}: {have.get(key, {}).get(p)} != {want.get(key, {}).get(p)} (expected)"
        for key in sorted(set(have) | set(want))
        for p in sorted(set(have.get(key, {})) | set(want.get(key, {})))
        if have.get(key, {}).get(p) != want.get(key, {}).get(p)
    ]
    assert not diff, f"{what} differ from the oracle: " + "; ".join(diff[:20])


@pytest.fixture
def boards() -> tuple[Board, ...]:
    """The boards under test (a test parametrised with ``boards`` replaces them)."""
    return BOARDS


@pytest.fixture
def live(config: Settings, pg: psycopg.Connection, boards: tuple[Board, ...]) -> Iterator[Live]:
    migrate(pg)
    client = redis.Redis.from_url(config.redis_url)
    try:
        lv = Live(config, pg, client, boards)
        lv.rebuild()  # the boards' first generations (empty)
        yield lv
    finally:
        client.close()


@pytest.mark.parametrize(
    ("boards", "seed"),
    [(BOARDS, 1), (BOARDS, 2), (BOARDS, 3), (KINDS, 4), (KINDS, 5)],
    ids=["sum-best-1", "sum-best-2", "sum-best-3", "asc-last-4", "asc-last-5"],
)
def test_every_path_equals_the_oracle_over_random_interleavings(
    config: Settings, live: Live, pg: psycopg.Connection, boards: tuple[Board, ...], seed: int
) -> None:
    rnd = random.Random(seed)
    players = [f"p{i}" for i in range(10)]
    truth = Truth(boards)
    sent: list[MatchWon] = []
    accepted: list[str] = []
    for step in range(40):
        if step < 3 or rnd.random() < 0.55:
            live.batch(random_events(rnd, players, sent), truth)
        else:
            aid = submit(config, truth, random_action(rnd, truth, players))
            if aid is not None:
                accepted.append(aid)
            live.moderate()
        assert_same(live.boards(), truth.boards(), f"live boards after step {step}")
    kinds = {r[0] for r in pg.execute("SELECT kind FROM moderation_actions")}
    assert {"exclude", "void"} <= kinds, kinds  # the interleaving exercised moderation at all
    assert len(accepted) >= 5
    expected = truth.boards()
    # verify's comparison: the checkpoint (refolded for the voided players) minus the held ones.
    for board in boards:
        lines, periods = compare.differences(live.client, pg, live.keys, board, None)
        assert lines == [], lines
        assert periods > 0
    # A rebuild from the checkpoint, and the recovery after Redis lost every key.
    live.rebuild()
    assert_same(live.boards(), expected, "rebuilt boards")
    for key in live.client.scan_iter(match=f"{config.redis_prefix}:*"):
        live.client.unlink(key)
    live.rebuild()
    assert_same(live.boards(), expected, "boards recovered after Redis lost its keys")
    # Nothing names an erased player on any board, neither the id nor the pseudonym.
    members = {p for scores in live.boards().values() for p in scores}
    assert not members & truth.erased
    assert not any(p.startswith("erased-") for p in members)


def test_a_best_board_falls_back_to_the_best_remaining_event_and_unvoid_restores_it(
    config: Settings, live: Live, pg: psycopg.Connection
) -> None:
    at = START + timedelta(days=1)
    wins = [
        MatchWon(
            event_id=str(uuid.uuid4()),
            match_id=f"x{i}",
            player_id="ann",
            game="chess",
            points=pts,
            occurred_at=at + timedelta(hours=i),
        )
        for i, pts in enumerate((4, 9, 6))
    ]
    live.batch(wins)
    best = ("best", "all_time")
    assert live.boards()[best] == {"ann": 9}
    void = action("void", reason="bugged match", match_ids=["x1"])
    service.submit(config, void, BOARD_IDS)
    live.moderate()
    assert live.boards()[best] == {"ann": 6}
    assert live.boards()[("sum", "all_time")] == {"ann": 10}
    unvoid = action("unvoid", reason="not bugged after all", target=void.action_id)
    service.submit(config, unvoid, BOARD_IDS)
    live.moderate()
    assert live.boards()[best] == {"ann": 9}
    assert live.boards()[("sum", "all_time")] == {"ann": 19}
    # The checkpoint agrees (refolded for ann only).
    checkpoints.advance(pg, BOARDS[1])
    rows = {
        (r[0], r[1]): r[2]
        for r in pg.execute("SELECT period, player_id, points FROM standings_checkpoint WHERE board = 'best'")
    }
    assert rows[("all_time", "ann")] == 9
