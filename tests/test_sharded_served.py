"""A sharded board served end to end (real Kafka, Redis, PostgreSQL; the real consumer, CLI and API).

The boards file holds the same board twice, ``plain`` (one sorted set per period) and ``split``
(``shards = 3``): the consumer feeds both from one stream, and every read of the API (top pages, a player,
around-me, friends, score ranges, stats, periods) answers the same for both, apart from the board's id.
Then one shard's keys vanish (Redis lost them): the consumer rebuilds the board from PostgreSQL by itself;
``rebuild --from postgres`` and ``verify`` work on it; a closed period is served from its stored standings.
The ground truth is the published stream (produce_stream), folded independently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from fastapi.testclient import TestClient

from leaderboard import boards as boards_mod
from leaderboard import scoring, shards
from leaderboard.keys import Keys
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings
from query_api.app import create_app
from tests.procs import ConsumerProcess, caught_up, leaderboard_cli, wait_until
from tests.test_consumer import produce_stream

BOARDS = """
[[board]]
id = "plain"
periods = ["all_time", "monthly", "daily"]

[[board]]
id = "split"
periods = ["all_time", "monthly", "daily"]
shards = 3
"""
PERIODS = ("all_time", "monthly:2026-11", "daily:2026-11-07")


def _get(api: TestClient, board: str, path: str) -> tuple[int, Any]:
    resp = api.get(f"/v1/leaderboards/{board}{path}")
    return resp.status_code, resp.json()


def _same(api: TestClient, path: str, body: dict[str, Any] | None = None) -> Any:
    """The plain and the split board answer ``path`` alike (the board's id aside); returns the answer."""
    if body is None:
        answers = [_get(api, b, path) for b in ("plain", "split")]
    else:
        answers = [
            (r.status_code, r.json())
            for r in (api.post(f"/v1/leaderboards/{b}{path}", json=body) for b in ("plain", "split"))
        ]
    (s1, a), (s2, b) = answers
    b = json.loads(json.dumps(b).replace("'split'", "'plain'").replace("/split/", "/plain/"))
    for doc in (a, b):
        if isinstance(doc, dict):
            if doc.get("board") in ("plain", "split"):
                doc["board"] = "plain"
            doc.pop("updated_at", None)  # each board's own last write
    assert (s1, a) == (s2, b), path
    return a


def _all_reads(api: TestClient, truth: dict[str, int]) -> None:
    players = sorted(truth, key=lambda p: (-truth[p], p))
    for period in PERIODS:
        q = f"period={period}"
        top = _same(api, f"/entries?{q}&limit=1000")
        assert top["total"] > 0
        for offset, limit in ((0, 10), (7, 5), (top["total"] - 2, 10)):
            _same(api, f"/entries?{q}&offset={offset}&limit={limit}")
        _same(api, f"/stats?{q}")
        for p in (*players[:3], players[len(players) // 2], players[-1], "nobody"):
            _same(api, f"/players/{p}?{q}")
            for radius in (0, 2, 5):
                _same(api, f"/players/{p}/around?{q}&radius={radius}")
        _same(api, f"/players:lookup?{q}", {"player_ids": [*players[:5], "nobody", players[-1]]})
        for lo, hi in ((1, 5), (3, 30), (0, 10_000)):
            _same(api, f"/players?{q}&min_score={lo}&max_score={hi}&limit=7&offset=1")
    assert _same(api, "/periods")["live"]
    all_time = _same(api, "/entries?period=all_time&limit=1000")
    assert {e["player_id"]: e["score"] for e in all_time["entries"]} == truth


def _board_is(api: TestClient, board: str, want: dict[str, int]) -> bool:
    status, doc = _get(api, board, "/entries?period=all_time&limit=1000")
    return status == 200 and {e["player_id"]: e["score"] for e in doc["entries"]} == want


def test_a_sharded_board_is_served_rebuilt_and_verified_as_the_unsharded_one(
    config: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "boards.toml"
    path.write_text(BOARDS)
    cfg = replace(config, boards_file=path)
    boards = boards_mod.load(path)
    split = next(b for b in boards if b.id == "split")
    keys = Keys(cfg.redis_prefix)
    r = sync_client(cfg)
    truth, _, _ = produce_stream(config, 1500, seed=91)
    consumer = ConsumerProcess(cfg, tmp_path, LEADERBOARD_BATCH_SIZE="300")
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config, consumer), 90, "consumed")
        # Each shard holds its own players only, on its own key.
        parts = shards.parts(split)
        for n, part in enumerate(parts):
            gen = int(cast("bytes", r.hget(keys.meta(part.id), "active")))
            members = [
                m.decode() for m in cast("list[bytes]", r.zrange(keys.board(part.id, gen, "all_time"), 0, -1))
            ]
            assert members
            assert all(shards.shard_of(m, 3) == n for m in members)
        with TestClient(create_app(cfg, boards)) as api:
            _all_reads(api, truth)

            # Moderation reaches every shard: two players (on different shards) held off, then back.
            ranked = sorted(truth, key=lambda p: -truth[p])
            held = [
                ranked[0],
                next(p for p in ranked if shards.shard_of(p, 3) != shards.shard_of(ranked[0], 3)),
            ]
            for action in ("exclude", "reinstate"):
                for p in held:
                    out = leaderboard_cli(cfg, "moderate", action, p, "--reason", "sharded test")
                    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
                shown = {p: v for p, v in truth.items() if action == "reinstate" or p not in held}
                wait_until(
                    lambda: _board_is(api, "split", shown) and _board_is(api, "plain", shown),  # noqa: B023
                    60,
                    f"the boards after {action}",
                )
                _all_reads(api, shown)

            # Redis loses one shard: the consumer's next batch finds it gone and rebuilds the board.
            lost = parts[1].id
            for key in list(r.scan_iter(match=f"{keys.base(lost)}*", count=1000)):
                r.delete(key)
            more, _, _ = produce_stream(config, 400, seed=92)
            want = dict(Counter(truth) + Counter(more))

            wait_until(lambda: _board_is(api, "split", want), 90, "the split board rebuilt by the consumer")
            wait_until(lambda: caught_up(config, consumer), 60, "caught up after the rebuild")
            _all_reads(api, want)

            out = leaderboard_cli(cfg, "rebuild", "--from", "postgres", "--board", "split", timeout=180)
            assert out.returncode == 0, out.stderr[-2000:]
            _all_reads(api, want)
            out = leaderboard_cli(cfg, "verify", "--board", "split")
            assert out.returncode == 0, out.stdout + out.stderr[-2000:]
            assert "ok: 1 board(s)" in out.stdout
            # verify sees a shard that differs: a player's score changed behind the consumer's back.
            victim = next(p for p in want if shards.shard_of(p, 3) == 2)
            gen = int(cast("bytes", r.hget(keys.meta(parts[2].id), "active")))
            r.zincrby(keys.board(parts[2].id, gen, "all_time"), 5 * scoring.TIME_SPAN, victim)
            out = leaderboard_cli(cfg, "verify", "--board", "split")
            assert out.returncode == 1, out.stdout + out.stderr[-2000:]
            assert f"split all_time {victim}: Redis" in out.stdout + out.stderr
            out = leaderboard_cli(cfg, "rebuild", "--from", "postgres", "--board", "split", timeout=180)
            assert out.returncode == 0, out.stderr[-2000:]
            _all_reads(api, want)

            # A closed period: both boards answer from their stored standings.
            out = leaderboard_cli(cfg, "close-period", "--period", "daily:2026-11-07")
            assert out.returncode == 0, out.stdout + out.stderr[-2000:]
            _same(api, "/entries?period=daily:2026-11-07&limit=1000")
    finally:
        consumer.stop()
        r.close()
