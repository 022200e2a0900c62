"""The admin API (/v1/admin/moderation) on the real app, PostgreSQL and Kafka: auth, actions, problems."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from consumers.migrate import migrate
from leaderboard.boards import Board, Season
from leaderboard.settings import Settings
from query_api.app import create_app
from schemas import moderation as m
from tests.procs import ApiProcess, read_topic, schemathesis, wait_until
from tests.test_moderation import T0, add_events, event

ADMIN = "admin-s3cret"
INGEST = "ingest-s3cret"
BOARDS = [Board(id="global"), Board(id="monthly")]
PATH = "/v1/admin/moderation"


@pytest.fixture
def db(pg: psycopg.Connection) -> psycopg.Connection:
    migrate(pg)
    return pg


def call(
    config: Settings, *requests: tuple[str, str, dict[str, Any]], boards: list[Board] = BOARDS
) -> list[httpx.Response]:
    """The app in process (no lifespan: the admin routes need none), real stores behind it."""

    async def main() -> list[httpx.Response]:
        app = create_app(config, boards, fast_path=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return [await client.request(method, url, **kw) for method, url, kw in requests]

    return asyncio.run(main())


def bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


def exclude(player: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "exclude",
        "actor": "ops",
        "reason": "cheating",
        "player_id": player,
        "boards": "all",
        **extra,
    }


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = r.json()
    assert doc["status"] == status
    assert doc["detail"]
    assert doc["title"]
    assert doc["type"].startswith("/problems/")
    return doc


def test_no_admin_token_means_404_never_open(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("alice", 2)])
    cfg = replace(config, admin_token="", ingest_token=INGEST)
    answers = call(
        cfg,
        ("POST", PATH, {"json": exclude("alice"), **bearer("")}),
        ("POST", PATH, {"json": exclude("alice"), **bearer(INGEST)}),
        ("GET", PATH, {}),
        ("GET", PATH + "?limit=0", {}),  # not even parameter checks answer
    )
    for r in answers:
        is_problem(r, 404)
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (0,)


def test_missing_token_401_wrong_token_403(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("alice", 2)])
    cfg = replace(config, admin_token=ADMIN, ingest_token=INGEST)
    missing, basic, wrong, ingest, prefix, listing = call(
        cfg,
        ("POST", PATH, {"json": exclude("alice")}),
        ("POST", PATH, {"json": exclude("alice"), "headers": {"Authorization": f"Basic {ADMIN}"}}),
        ("POST", PATH, {"json": exclude("alice"), **bearer(ADMIN + "x")}),
        (
            "POST",
            PATH,
            {"json": exclude("alice"), **bearer(INGEST)},
        ),  # the ingest token is not an admin token
        ("GET", PATH, bearer(ADMIN[:-1])),
        ("GET", PATH + "?limit=0", {}),
    )
    assert is_problem(missing, 401)["type"] == "/problems/unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    for r in (basic, wrong, ingest, prefix):
        assert is_problem(r, 403)["type"] == "/problems/forbidden"
    is_problem(listing, 401)
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (0,)


def test_actions_idempotent_listed_and_published(config: Settings, db: psycopg.Connection) -> None:
    e1 = event("alice", 2)
    add_events(db, [e1, event("bob", 3)])
    cfg = replace(config, admin_token=ADMIN)
    aid = str(uuid.uuid4())
    first, again, void, listing, mine = call(
        cfg,
        ("POST", PATH, {"json": exclude("alice", action_id=aid), **bearer(ADMIN)}),
        ("POST", PATH, {"json": exclude("alice", action_id=aid), **bearer(ADMIN)}),
        (
            "POST",
            PATH,
            {
                "json": {"kind": "void", "actor": "ops", "reason": "bug", "event_ids": [e1[0]]},
                **bearer(ADMIN),
            },
        ),
        ("GET", PATH + "?limit=1", bearer(ADMIN)),
        ("GET", PATH + "?player=alice", bearer(ADMIN)),
    )
    assert first.status_code == 201, first.text
    assert first.json() == {
        "action_id": aid,
        "seq": first.json()["seq"],
        "kind": "exclude",
        "duplicate": False,
        "published": True,
    }
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["seq"] == first.json()["seq"]
    assert void.status_code == 201, void.text
    page = listing.json()
    assert [a["action"]["action_id"] for a in page["actions"]] == [aid]
    assert page["next_after"] == first.json()["seq"]
    [only] = mine.json()["actions"]
    assert only["action"]["player_id"] == "alice"
    assert only["published"] is True
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (2,)
    records = [m.decode(v or b"") for _, v, _ in read_topic(cfg, cfg.moderation_topic)]
    # The topic may have several partitions, so only the per-partition
    # order is defined: each action is published exactly once.
    assert sorted((a.kind, a.action_id) for a in records if not isinstance(a, m.Invalid)) == [
        ("exclude", aid),
        ("void", void.json()["action_id"]),
    ]


def test_bad_input_is_a_problem_and_records_nothing(config: Settings, db: psycopg.Connection) -> None:
    add_events(db, [event("alice", 2)])
    cfg = replace(config, admin_token=ADMIN)
    ok = call(cfg, ("POST", PATH, {"json": exclude("alice", boards=["global"]), **bearer(ADMIN)}))[0]
    assert ok.status_code == 201
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"content": b"{not json"}, 400, "invalid-parameter"),
        ({"content": b"[" * 100 + b"]" * 100}, 400, "invalid-parameter"),
        ({"json": [exclude("alice")]}, 422, "invalid-action"),
        ({"json": exclude("alice", reason="")}, 422, "invalid-action"),
        ({"json": exclude("alice", reason="a\u0000b")}, 422, "invalid-action"),
        ({"json": exclude("alice", extra_field=1)}, 422, "invalid-action"),
        ({"json": exclude("alice", action_id="not-a-uuid")}, 422, "invalid-action"),
        ({"json": exclude("ghost")}, 422, "unknown-player"),
        ({"json": exclude("alice", boards=["weekly"])}, 422, "unknown-board"),
        ({"json": exclude("alice", boards=["global"])}, 409, "already-excluded"),
        (
            {"json": {"kind": "void", "actor": "o", "reason": "r", "event_ids": [str(uuid.uuid4())]}},
            422,
            "unknown-event",
        ),
        (
            {"json": {"kind": "unvoid", "actor": "o", "reason": "r", "target": ok.json()["action_id"]}},
            409,
            "not-a-void",
        ),
        (
            {"json": exclude("alice", action_id=ok.json()["action_id"], boards=["monthly"])},
            409,
            "action-id-reused",
        ),
        (
            {
                "json": {
                    "kind": "void",
                    "actor": "o",
                    "reason": "r",
                    "player_id": "alice",
                    "from": "2026-11-02T00:00:00Z",
                    "until": "2026-11-01T00:00:00Z",
                }
            },
            422,
            "invalid-action",
        ),
    ]
    answers = call(cfg, *(("POST", PATH, {**kw, **bearer(ADMIN)}) for kw, _, _ in cases))
    for (kw, status, kind), r in zip(cases, answers, strict=True):
        assert is_problem(r, status)["type"] == f"/problems/{kind}", (kw, r.text)
    bad_query = call(
        cfg,
        ("GET", PATH + "?limit=501", bearer(ADMIN)),
        ("GET", PATH + "?after=-1", bearer(ADMIN)),
        ("GET", PATH + "?player=a%00b", bearer(ADMIN)),  # PostgreSQL cannot even compare a NUL
        ("GET", PATH + f"?after={2**63}", bearer(ADMIN)),
    )
    for r in bad_query:
        is_problem(r, 400)
    assert db.execute("SELECT count(*) FROM moderation_actions").fetchone() == (1,)
    assert db.execute("SELECT board FROM moderation_exclusions").fetchall() == [("global",)]


def test_openapi_documents_the_admin_routes(config: Settings) -> None:
    [r] = call(replace(config, admin_token=ADMIN), ("GET", "/openapi.json", {}))
    paths = r.json()["paths"]
    post, get = paths[PATH]["post"], paths[PATH]["get"]
    for op in (post, get):
        assert {"401", "403", "404", "503"} <= set(op["responses"])
        assert "application/problem+json" in op["responses"]["403"]["content"]
    assert {"200", "201", "409", "422"} <= set(post["responses"])
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert {b["properties"]["kind"]["const"] for b in body["oneOf"]} == set(m.KINDS)
    assert all("action_id" not in b["required"] for b in body["oneOf"])
    assert "$ref" not in str(body)


def test_postgres_down_is_503_and_retryable(config: Settings) -> None:
    cfg = replace(config, admin_token=ADMIN, database_url="postgresql://nobody@127.0.0.1:1/none")
    post, listing = call(
        cfg, ("POST", PATH, {"json": exclude("alice"), **bearer(ADMIN)}), ("GET", PATH, bearer(ADMIN))
    )
    for r in (post, listing):
        assert is_problem(r, 503)["type"] == "/problems/postgres-unavailable"
        assert r.headers["retry-after"] == "5"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_on_the_admin_routes(
    config: Settings, db: psycopg.Connection, tmp_path: Path
) -> None:
    """Fuzzed actions and queries with the right token against the running API: never a 5xx, every answer
    as documented (PostgreSQL and Kafka real; refusals are problem documents)."""
    add_events(db, [event("alice", 2), event("bob", 3)])
    api = ApiProcess(replace(config, admin_token=ADMIN), tmp_path)
    try:
        wait_until(lambda: api.get("/healthz")[0] == 200, 60, "API up")
        # fmt: off
        out = schemathesis(
            api,
            "--include-path-regex", "^/v1/admin/", "-H", f"Authorization: Bearer {ADMIN}",
            "--max-examples", "60", "--seed", "3", "--phases", "examples,fuzzing",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
            "--request-timeout", "20",
            timeout=300,
        )
        # fmt: on
    finally:
        api.stop()
    assert "Tested: 10" in out  # every admin operation (moderation 3, boards 7), not a filtered-out run


def test_investigation_lists_the_events_behind_a_score_counted_or_why_not(
    config: Settings, db: psycopg.Connection
) -> None:
    cfg = replace(config, admin_token=ADMIN)
    kept, voided, in_window, other = event("ivy", 2), event("ivy", 3), event("ivy", 10), event("ivy", 20)
    add_events(db, [kept, voided, in_window, other, event("bob", 4)])
    url = "/v1/admin/players/ivy/events"
    void_event = {"kind": "void", "actor": "ops", "reason": "x", "event_ids": [voided[0]]}
    window = {
        "kind": "void",
        "actor": "ops",
        "reason": "x",
        "player_id": "ivy",
        "from": "2026-11-09T00:00:00Z",
        "until": "2026-11-11T00:00:00Z",
    }
    hold = {**exclude("ivy"), "boards": ["monthly"]}
    responses = call(
        cfg,
        ("POST", PATH, {"json": void_event, **bearer(ADMIN)}),
        ("POST", PATH, {"json": window, **bearer(ADMIN)}),
        ("POST", PATH, {"json": hold, **bearer(ADMIN)}),
        (
            "GET",
            url,
            {"params": {"board": "global", "period": "monthly:2026-11", "limit": 3}, **bearer(ADMIN)},
        ),
        ("GET", url, {"params": {"board": "global", "offset": 3}, **bearer(ADMIN)}),
        ("GET", url, {"params": {"board": "monthly", "period": "daily:2026-11-20"}, **bearer(ADMIN)}),
        ("GET", url, {"params": {"board": "nope"}, **bearer(ADMIN)}),
        ("GET", url, {"params": {"board": "global", "period": "weekly:x"}, **bearer(ADMIN)}),
        ("GET", url, {"params": {"board": "global"}}),
    )
    assert [r.status_code for r in responses[:3]] == [201, 201, 201]
    first, rest, held, unknown, bad_period, anonymous = responses[3:]
    assert first.status_code == 200, first.text
    page = first.json()
    assert [(e["event_id"], e["counted"], e["why_not"]) for e in page["events"]] == [
        (kept[0], True, None),
        (voided[0], False, "voided-event"),
        (in_window[0], False, "voided-window"),
    ]
    assert page["next_offset"] == 3
    assert [(e["event_id"], e["why_not"]) for e in rest.json()["events"]] == [(other[0], None)]
    assert rest.json()["next_offset"] is None
    assert [(e["event_id"], e["why_not"]) for e in held.json()["events"]] == [(other[0], "held")]
    assert (unknown.status_code, unknown.json()["type"].rsplit("/", 1)[-1]) == (422, "unknown-board")
    assert bad_period.status_code == 422
    assert anonymous.status_code == 401


def test_investigation_on_a_score_board_names_events_without_a_score_and_reads_seasons(
    config: Settings, db: psycopg.Connection
) -> None:
    cfg = replace(config, admin_token=ADMIN)
    season = Season("s1", T0, T0.replace(day=10))
    laps = Board(id="laps", order="asc", value="score", seasons=(season,))
    timed, untimed, later = event("ivy", 2), event("ivy", 3), event("ivy", 12)
    add_events(db, [timed, untimed, later])
    db.execute("UPDATE events SET score = 40 WHERE event_id = %s", (timed[0],))
    url = "/v1/admin/players/ivy/events"
    ok, unknown_season = call(
        cfg,
        ("GET", url, {"params": {"board": "laps", "period": "season:s1"}, **bearer(ADMIN)}),
        ("GET", url, {"params": {"board": "laps", "period": "season:s2"}, **bearer(ADMIN)}),
        boards=[*BOARDS, laps],
    )
    assert ok.status_code == 200, ok.text
    assert [(e["event_id"], e["score"], e["counted"], e["why_not"]) for e in ok.json()["events"]] == [
        (timed[0], 40, True, None),
        (untimed[0], None, False, "not-on-board"),  # later (day 12) is outside the season
    ]
    assert (unknown_season.status_code, unknown_season.json()["type"].rsplit("/", 1)[-1]) == (
        422,
        "invalid-period",
    )
