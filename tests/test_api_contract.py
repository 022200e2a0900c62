"""The API over data written by the real consumer, and schemathesis against the running service's OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from leaderboard.settings import Settings
from tests.procs import ApiProcess, consumer_and_api, schemathesis

BOARDS = """
[[board]]
id = "global"

[[board]]
id = "empty"
periods = ["all_time"]
[board.filter]
game = "nobody-plays-this"
"""


@pytest.fixture
def served(config: Settings, tmp_path: Path) -> Iterator[tuple[Settings, ApiProcess]]:
    boards = tmp_path / "boards.toml"
    boards.write_text(BOARDS)
    cfg = replace(config, boards_file=boards, ingest_token="contract-test-token")
    simulate = ("--count", "3000", "--rate", "0", "--players", "300", "--seed", "5")
    stream = (
        "--start",
        "2026-11-20T00:00:00Z",
        "--spread",
        "86400",
        "--display-names",
        "--duplicate-ratio",
        "0.05",
    )
    with consumer_and_api(cfg, tmp_path, *simulate, *stream, catch_up_s=90) as (_, api):
        yield cfg, api


def get(api: ApiProcess, path: str) -> tuple[int, dict[str, Any]]:
    status, body = api.get(path)
    return status, json.loads(body)


def test_every_route_over_consumer_written_data(served: tuple[Settings, ApiProcess]) -> None:
    _, api = served
    status, page = get(api, "/v1/leaderboards/global/entries?period=all_time&limit=1000")
    assert status == 200
    entries = page["entries"]
    assert isinstance(entries, list)
    assert len(entries) == page["total"]
    assert 200 < len(entries) <= 300  # skewed winners: most of the 300 players won at least once
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    for i, e in enumerate(entries):  # competition ranks: 1 + number of strictly higher scores
        assert e["rank"] == 1 + sum(1 for s in scores if s > e["score"]), e
        assert e["display_name"], e
        if i and scores[i] == scores[i - 1]:
            assert e["rank"] == entries[i - 1]["rank"]
    first, last = entries[0], entries[-1]
    status, me = get(api, f"/v1/leaderboards/global/players/{last['player_id']}?period=all_time")
    assert status == 200
    assert me["rank"] == last["rank"]
    assert me["total"] == len(entries)
    status, around = get(
        api, f"/v1/leaderboards/global/players/{first['player_id']}/around?radius=3&period=all_time"
    )
    assert status == 200
    assert [e["player_id"] for e in around["entries"]] == [e["player_id"] for e in entries[:7]]
    status, around = get(
        api, f"/v1/leaderboards/global/players/{last['player_id']}/around?radius=3&period=all_time"
    )
    assert status == 200
    assert [e["player_id"] for e in around["entries"]] == [e["player_id"] for e in entries[-7:]]
    status, stats = get(api, "/v1/leaderboards/global/stats?period=all_time")
    assert status == 200
    assert stats["players"] == len(entries)
    assert stats["top_score"] == first["score"]
    status, empty = get(api, "/v1/leaderboards/empty/entries?period=all_time")
    assert status == 200
    assert empty["entries"] == []
    assert empty["total"] == 0
    status, problem = get(api, "/v1/leaderboards/global/players/never-won?period=all_time")
    assert status == 404
    assert "never-won" in str(problem["detail"])
    status, problem = get(api, "/v1/leaderboards/global/entries?period=monthly:2026-13")
    assert status == 400
    assert "period" in str(problem["detail"])


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    served: tuple[Settings, ApiProcess],
) -> None:
    _, api = served
    # fmt: off
    schemathesis(
        api,
        "--max-examples", "25", "--seed", "1", "--phases", "examples,fuzzing",
        "--checks", "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--exclude-path-regex", "stream$", "--request-timeout", "10", "--workers", "2",
        timeout=600,
    )
    # fmt: on
