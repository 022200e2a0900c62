"""Boards managed at runtime against the real services (issue 16, item 4).

One consumer and one API run throughout, serving the boards file's ``global`` board; 100,000 events (with
re-sent duplicates) are consumed first. Then, with live traffic still flowing and a reader hammering
``global``: boards are created at runtime, built from the whole history as drafts, compared, activated,
changed and retired with ``leaderboard boards``. Expected standings come from an independent fold of what
the test published (de-duplicated by event_id), never from the code under test.
"""

from __future__ import annotations

import json
import random
import threading
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from leaderboard import catalog
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.settings import Settings
from tests.conftest import isolated
from tests.procs import ApiProcess, ConsumerProcess, caught_up, http_get, leaderboard_cli, wait_until

pytestmark = pytest.mark.slow
HISTORY = 100_000
PLAYERS = 3000
GAMES = ("chess", "go", "poker")
ADMIN_TOKEN = "admin-token-for-runtime-boards"


@dataclass
class Published:
    """Every distinct event the test published (first copy per event_id), for the independent folds."""

    events: dict[str, dict[str, object]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _event(rnd: random.Random, now: datetime) -> dict[str, object]:
    player = f"p{min(int(rnd.paretovariate(0.8)), PLAYERS)}"
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "match_id": f"m-{rnd.randrange(10**9)}",
        "player_id": player,
        "game": rnd.choice(GAMES),
        "points": rnd.choice((1, 1, 2, 3, 10)),
        "occurred_at": (now - timedelta(seconds=rnd.randrange(0, 20 * 3600)))
        .isoformat()
        .replace("+00:00", "Z"),
    }
    if rnd.random() < 0.8:
        body["score"] = rnd.randrange(30_000, 90_000)
    return body


class Publisher:
    def __init__(self, config: Settings, published: Published) -> None:
        self.config = config
        self.published = published
        self.producer = Producer({**config.kafka_common(), "enable.idempotence": True, "linger.ms": 5})

    def send(self, bodies: list[dict[str, object]]) -> None:
        for body in bodies:
            with self.published.lock:
                self.published.events.setdefault(str(body["event_id"]), body)
            self.producer.produce(self.config.topic, orjson.dumps(body), str(body["player_id"]).encode())
            self.producer.poll(0)
        assert self.producer.flush(30) == 0


class Traffic:
    """Live events (a few hundred a second) and a reader of the ``global`` board, both in threads."""

    def __init__(self, publisher: Publisher, api: ApiProcess) -> None:
        self.publisher, self.api = publisher, api
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.reads = 0
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._read)]

    def _write(self) -> None:
        rnd = random.Random(7)
        while not self.stop.is_set():
            self.publisher.send([_event(rnd, datetime.now(UTC)) for _ in range(40)])
            time.sleep(0.1)

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                status, body = self.api.get("/v1/leaderboards/global/entries?limit=10")
            except OSError as exc:
                self.errors.append(f"global: {exc}")
                continue
            self.reads += 1
            if status != 200 or not orjson.loads(body)["entries"]:
                self.errors.append(f"global: {status} {body[:200]!r}")
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@dataclass
class World:
    config: Settings
    consumer: ConsumerProcess
    api: ApiProcess
    publisher: Publisher
    published: Published
    redis: redis.Redis
    tmp: Path
    running: list[ConsumerProcess | ApiProcess]
    """Every child process started, stopped at the end."""

    def cli(self, *args: str) -> tuple[int, str, str]:
        out = leaderboard_cli(self.config, "boards", *args, timeout=240)
        return out.returncode, out.stdout, out.stderr

    def ok(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert code == 0, f"boards {' '.join(args)} exited {code}: {err[-2000:]}"
        return out

    def file(self, text: str) -> str:
        path = self.tmp / f"boards-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def caught_up(self) -> None:
        wait_until(lambda: caught_up(self.config), 90, "consumer caught up")

    def standings(self, board: Board) -> dict[str, tuple[int, int]]:
        """player -> (rank, value) of the board's all_time period, as Redis' active generation holds it."""
        keys = Keys(self.config.redis_prefix)
        gen = int(cast("bytes", self.redis.hget(keys.meta(board.id), "active")))
        rows = cast(
            "list[tuple[bytes, float]]",
            self.redis.zrevrange(keys.board(board.id, gen, "all_time"), 0, -1, withscores=True),
        )
        values = [(m.decode(), board.rule.unpack(s)[0]) for m, s in rows]
        return {p: (r, v) for (p, v), r in zip(values, catalog.ranks(values).values(), strict=True)}


@pytest.fixture(scope="module")
def world(
    base_settings: Settings, admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("runtime-boards")
    with isolated(base_settings, admin, (4, 1, 1)) as cfg:
        published = Published()
        publisher = Publisher(cfg, published)
        rnd = random.Random(2026)
        now = datetime.now(UTC)
        history = [_event(rnd, now) for _ in range(HISTORY)]
        resent = [dict(b) for b in rnd.sample(history, 1000)]  # duplicates: the same event_id again
        publisher.send(history + resent)
        consumer = ConsumerProcess(cfg, tmp)
        client = redis.Redis.from_url(cfg.redis_url)
        running: list[ConsumerProcess | ApiProcess] = [consumer]
        try:
            consumer.wait_ready()
            api = ApiProcess(cfg, tmp, LEADERBOARD_ADMIN_TOKEN=ADMIN_TOKEN)
            running.append(api)
            api.wait_ready()
            w = World(cfg, consumer, api, publisher, published, client, tmp, running)
            w.caught_up()
            yield w
        finally:
            for proc in running:  # also those a test started in place of these
                proc.stop()
            client.close()


def truth(published: Published, board: Board) -> dict[str, tuple[int, int]]:
    """The independent fold: player -> (competition rank, value) on the board's all_time period."""
    with published.lock:
        events = list(published.events.values())
    best: dict[str, int] = {}
    asc = board.order == "asc"
    for e in events:
        if board.games is not None and e["game"] not in board.games:
            continue
        value = e.get(board.value)
        if value is None:
            continue
        v = int(cast("int", value))
        p = str(e["player_id"])
        if board.aggregation == "sum":
            best[p] = best.get(p, 0) + v
        elif p not in best or (v < best[p] if asc else v > best[p]):
            best[p] = v
    better: Callable[[int, int], bool] = (lambda a, b: a < b) if asc else (lambda a, b: a > b)
    ordered = sorted(best.values(), reverse=not asc)
    out = {}
    for p, v in best.items():
        # rank = 1 + players strictly better (bisect over the sorted values)
        lo, hi = 0, len(ordered)
        while lo < hi:
            mid = (lo + hi) // 2
            if better(ordered[mid], v):
                lo = mid + 1
            else:
                hi = mid
        out[p] = (lo + 1, v)
    return out


WINS_V1 = """
[[board]]
id = "wins"
periods = ["all_time", "daily"]
timezone = "Asia/Kathmandu"
filter = { game = ["chess"] }

[[board]]
id = "laps"
periods = ["all_time", "weekly"]
aggregation = "best"
order = "asc"
value = "score"
filter = { game = ["go", "poker"] }
"""
WINS_V2 = WINS_V1.replace('filter = { game = ["chess"] }', 'filter = { game = ["chess", "go"] }')


def _api_top(world: World, board: str, limit: int = 50) -> list[tuple[str, int, int]]:
    status, body = world.api.get(f"/v1/leaderboards/{board}/entries?period=all_time&limit={limit}")
    assert status == 200, body
    return [(e["player_id"], e["rank"], e["score"]) for e in orjson.loads(body)["entries"]]


def _catalog_version(world: World) -> int:
    with psycopg.connect(world.config.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT version FROM board_catalog").fetchone()
        assert row is not None
        return int(row[0])


def test_a_board_created_at_runtime_over_the_history_is_exact_after_activate(world: World) -> None:
    path = world.file(WINS_V1)
    plan = world.ok("plan", path)
    assert "+ wins: new board" in plan
    assert "+ laps: new board" in plan
    assert "wins" not in world.ok("list")  # plan wrote nothing
    wins, laps = catalog.parse_file(tomllib.loads(WINS_V1), "test")
    with Traffic(world.publisher, world.api) as traffic:
        applied = world.ok("apply", path)
        assert "built from" in applied, applied
        assert world.api.get("/v1/leaderboards/wins/entries")[0] == 404  # a draft is not served
        diff = json.loads(world.ok("diff", "wins", "--json", "--top", "5"))
        assert diff["players_before"] == 0
        assert len(diff["entering_top"]) >= 5
        for name in ("wins", "laps"):
            out = world.ok("activate", name)
            assert "active" in out, out
            started = time.monotonic()
            url = f"{world.api.url}/v1/leaderboards/{name}/entries"

            def serving(url: str = url) -> bool:
                return http_get(url, 5)[0] == 200

            wait_until(
                serving,
                5,
                f"API serving {name} (consumer loaded it)",
                interval=0.05,
            )
            assert time.monotonic() - started < 5
        time.sleep(1.5)  # more live traffic onto the new boards
    assert traffic.reads > 20
    assert not traffic.errors, traffic.errors[:5]
    world.caught_up()
    for board in (wins, laps):
        expected = truth(world.published, board)
        assert len(expected) > 100
        assert world.standings(board) == expected, board.id
        top = _api_top(world, board.id)
        assert [(p, r, s) for p, r, s in top] == [(p, expected[p][0], expected[p][1]) for p, _, _ in top], (
            board.id
        )
        assert sorted(r for _, r, _ in top) == [r for _, r, _ in top]


def test_a_changed_filter_is_diffed_then_switched_live_under_traffic(world: World) -> None:
    before_v = _catalog_version(world)
    path = world.file(WINS_V2)
    assert "~ wins: new draft version (filter changed)" in world.ok("plan", path)
    wins_v1, _ = catalog.parse_file(tomllib.loads(WINS_V1), "test")
    wins_v2, _ = catalog.parse_file(tomllib.loads(WINS_V2), "test")
    with Traffic(world.publisher, world.api) as traffic:
        world.ok("apply", path)
        assert _catalog_version(world) > before_v
        traffic.stop.set()
        for t in traffic.threads:
            t.join(30)
        world.caught_up()
        # Quiet now: the live version and the draft both cover exactly what was published.
        got = json.loads(world.ok("diff", "wins", "--json", "--top", "10"))
        old, new = truth(world.published, wins_v1), truth(world.published, wins_v2)
        moved = {p for p in set(old) | set(new) if old.get(p, (None,))[0] != new.get(p, (None,))[0]}
        assert {m["player_id"] for m in got["moves"]} == moved
        assert moved
        assert (got["players_before"], got["players_after"]) == (len(old), len(new))
        top_old = {p for p, (r, _) in old.items() if r <= 10}
        top_new = {p for p, (r, _) in new.items() if r <= 10}
        assert set(got["entering_top"]) == top_new - top_old
        assert set(got["leaving_top"]) == top_old - top_new
    with Traffic(world.publisher, world.api) as traffic:
        assert "readers switched" in world.ok("activate", "wins")
        time.sleep(2)
    assert not traffic.errors, traffic.errors[:5]
    world.caught_up()
    assert world.standings(wins_v2) == truth(world.published, wins_v2)
    # Every period of every fed board (runtime ones included) equals PostgreSQL's own fold.
    verified = leaderboard_cli(world.config, "verify", timeout=120)
    assert verified.returncode == 0, verified.stderr[-2000:]
    assert "ok: 3 board(s)" in verified.stdout, verified.stdout
    status, body = world.api.get("/v1/leaderboards")
    assert status == 200
    assert any(b["id"] == "wins" for b in orjson.loads(body)["boards"])


def test_a_malformed_definition_is_refused_naming_the_field_and_nothing_changes(world: World) -> None:
    listed, version = world.ok("list"), _catalog_version(world)
    for bad, field_name in (
        (WINS_V2.replace('order = "asc"', 'order = "upwards"'), "order"),
        (WINS_V2.replace('value = "score"', 'value = "score"\nordr = "asc"'), "ordr"),
        (WINS_V2.replace('timezone = "Asia/Kathmandu"', 'timezone = "Asia/Nowhere"'), "timezone"),
    ):
        for action in ("plan", "apply"):
            code, out, err = world.cli(action, world.file(bad))
            assert code == 2, (code, out, err)
            assert len(err.strip().splitlines()) == 1, err
            assert field_name in err, err
    assert world.ok("list") == listed
    assert _catalog_version(world) == version


def boards_reloaded(consumer: ConsumerProcess, since: int) -> list[dict[str, int]]:
    """The boards (id -> version) the consumer took up, per its "boards reloaded" log lines after byte
    ``since`` of its log; a line still being written is read on the next call."""
    with consumer.log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().splitlines()
    fed = []
    for line in lines:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if doc.get("msg") == "boards reloaded":
            fed.append(cast("dict[str, int]", doc["boards"]))
    return fed


def test_a_retired_board_is_no_longer_fed_and_stays_readable(world: World) -> None:
    _, laps = catalog.parse_file(tomllib.loads(WINS_V1), "test")
    world.caught_up()
    frozen = world.standings(laps)
    since = world.consumer.log_path.stat().st_size
    assert "retired" in world.ok("retire", "laps")
    wait_until(
        lambda: any("laps" not in fed for fed in boards_reloaded(world.consumer, since)),
        10,
        "the consumer to take up the boards without laps",
        interval=0.1,
    )
    rnd = random.Random(99)
    world.publisher.send([{**_event(rnd, datetime.now(UTC)), "game": "go", "score": 1} for _ in range(200)])
    world.caught_up()
    assert world.standings(laps) == frozen
    top = _api_top(world, "laps")
    assert top
    assert all(frozen[p] == (r, s) for p, r, s in top)
    assert "laps                             retired" in world.ok("list")


def _admin(
    world: World, method: str, path: str, body: object = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(f"{world.api.url}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, cast("dict[str, Any]", orjson.loads(resp.read()))
    except urllib.error.HTTPError as err:
        kind, code, body = err.headers["Content-Type"], err.code, orjson.loads(err.read())
    assert kind == "application/problem+json", kind
    return code, cast("dict[str, Any]", body)


def test_the_admin_api_manages_boards_behind_the_admin_token(world: World) -> None:
    assert _admin(world, "GET", "/v1/admin/boards", token=None)[0] == 401
    assert _admin(world, "GET", "/v1/admin/boards", token="wrong")[0] == 403
    status, listed = _admin(world, "GET", "/v1/admin/boards")
    assert status == 200
    before = listed["boards"]
    status, problem = _admin(
        world, "POST", "/v1/admin/boards:apply", {"board": [{"id": "recent", "aggregation": "latest"}]}
    )
    assert status == 422
    assert "aggregation" in problem["detail"]
    assert _admin(world, "GET", "/v1/admin/boards")[1]["boards"] == before  # nothing stored
    recent = {"id": "recent", "aggregation": "last", "value": "score", "periods": ["all_time"]}
    status, planned = _admin(world, "POST", "/v1/admin/boards:plan", {"board": [recent]})
    assert status == 200
    assert [c["action"] for c in planned["changes"]] == ["create"]
    assert _admin(world, "GET", "/v1/admin/boards/recent")[0] == 404
    status, applied = _admin(world, "POST", "/v1/admin/boards:apply", {"board": [recent]})
    assert status == 200, applied
    assert applied["changes"][0]["built"]["events"] >= HISTORY
    status, diff = _admin(world, "GET", "/v1/admin/boards/recent/diff?top=3")
    assert status == 200
    assert diff["players_before"] == 0
    assert len(diff["entering_top"]) == 3
    status, shown = _admin(world, "GET", "/v1/admin/boards/recent")
    assert status == 200
    assert (shown["state"], shown["draft_version"], shown["draft_built"]) == ("draft", 1, True)
    assert _admin(world, "POST", "/v1/admin/boards/global/activate")[0] == 404  # a file board: not managed
    status, done = _admin(world, "POST", "/v1/admin/boards/recent/activate")
    assert status == 200, done
    assert _admin(world, "POST", "/v1/admin/boards/recent/activate")[0] == 409  # no draft any more
    wait_until(lambda: world.api.get("/v1/leaderboards/recent/entries")[0] == 200, 5, "API serving recent")


def test_restarted_processes_start_with_the_catalogs_boards(world: World) -> None:
    """A consumer and an API started after the changes take the catalog's boards at start: the changed
    ``wins`` is fed under its live version, the retired ``laps`` is not, both are served."""
    wins_v2, laps = catalog.parse_file(tomllib.loads(WINS_V2), "test")
    world.caught_up()
    frozen = world.standings(laps)
    world.consumer.stop()
    world.consumer = ConsumerProcess(world.config, world.tmp, name="consumer-again")
    world.running.append(world.consumer)
    world.consumer.wait_ready()
    rnd = random.Random(5)
    world.publisher.send([{**_event(rnd, datetime.now(UTC)), "game": "go", "score": 2} for _ in range(300)])
    world.caught_up()
    assert world.standings(wins_v2) == truth(world.published, wins_v2)
    assert world.standings(laps) == frozen
    world.api.stop()
    world.api = ApiProcess(world.config, world.tmp, LEADERBOARD_ADMIN_TOKEN=ADMIN_TOKEN)
    world.running.append(world.api)
    world.api.wait_ready()
    status, body = world.api.get("/v1/leaderboards")
    assert status == 200
    assert {"global", "wins", "laps", "recent"} <= {b["id"] for b in orjson.loads(body)["boards"]}


def test_a_retired_board_comes_back_with_the_events_of_its_retirement(world: World) -> None:
    _, laps = catalog.parse_file(tomllib.loads(WINS_V1), "test")
    only_laps = world.file(WINS_V1[WINS_V1.index('[[board]]\nid = "laps"') :])
    assert "~ laps: new draft version (the retired board comes back)" in world.ok("plan", only_laps)
    world.ok("apply", only_laps)
    world.ok("activate", "laps")
    world.caught_up()
    expected = truth(world.published, laps)  # the go events with score 1 and 2 sent while it was retired
    keys = Keys(world.config.redis_prefix)
    wait_until(lambda: world.redis.hget(keys.meta("laps"), "active"), 10, "laps loaded again by the consumer")
    assert world.standings(laps) == expected
    assert "laps                             active" in world.ok("list")
