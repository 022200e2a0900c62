"""The bounded ``leaderboard demo`` (CI's first command) fails unless events were applied and served."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from leaderboard.demo import APPLIED, await_served, served_verdict
from leaderboard.errors import UserError
from leaderboard.net import free_port
from leaderboard.settings import Settings
from tests.procs import ApiProcess, ConsumerProcess, caught_up, leaderboard_cli, wait_until

PAGE = {"entries": [{"rank": 1, "player_id": "p1", "score": 7}]}


def test_verdict_passes_only_when_applied_and_served() -> None:
    assert served_verdict({"p1", "p2"}, {9401: 3.0, 9402: 0.0}, 200, PAGE) is None


@pytest.mark.parametrize(
    ("written", "applied", "status", "page", "why"),
    [
        (set(), {1: 5.0}, 200, PAGE, "no acknowledged event"),
        ({"p1"}, {1: 5.0, 2: None}, 200, PAGE, "port(s) 2 did not answer"),
        ({"p1"}, {1: 0.0, 2: 0.0}, 200, PAGE, f"no event was applied ({APPLIED} is 0"),
        ({"p1"}, {}, 200, PAGE, "no event was applied"),
        ({"p1"}, {1: 5.0}, 0, {}, "answered nothing"),
        ({"p1"}, {1: 5.0}, 503, {}, "answered 503"),
        ({"p1"}, {1: 5.0}, 200, {"entries": []}, "empty top-N board"),
        ({"p9"}, {1: 5.0}, 200, PAGE, "none of the players the simulator wrote"),
    ],
)
def test_verdict_names_what_is_missing(
    written: set[str], applied: dict[int, float | None], status: int, page: dict[str, object], why: str
) -> None:
    verdict = served_verdict(written, applied, status, page)
    assert verdict is not None
    assert why in verdict, verdict
    assert "\n" not in verdict


def test_check_fails_on_nothing_applied_then_passes_once_served(config: Settings, tmp_path: Path) -> None:
    """Against a real consumer and API: an empty topic fails the check; the simulator's events pass it."""
    consumer = ConsumerProcess(config, tmp_path)
    api = ApiProcess(config, tmp_path)
    try:
        consumer.wait_ready()
        api.wait_ready()
        with pytest.raises(UserError, match="no event was applied"):
            await_served({"p1"}, [consumer.port], api.url, timeout=2)
        truth = tmp_path / "truth.json"
        sim = leaderboard_cli(
            config, "simulate", "--rate", "0", "--count", "200", "--players", "20", "--truth", str(truth)
        )
        assert sim.returncode == 0, sim.stderr
        written = set(json.loads(truth.read_text())["players"])
        wait_until(lambda: caught_up(config), 60, "consumer caught up")
        assert await_served(written, [consumer.port], api.url, timeout=30) > 0
        with pytest.raises(UserError, match="none of the players"):
            await_served({"someone-else"}, [consumer.port], api.url, timeout=1)
    finally:
        api.stop()
        consumer.stop()


@pytest.mark.slow
def test_bounded_demo_passes_its_check(config: Settings, tmp_path: Path) -> None:
    """The CI command itself, on this test's topics, prefix and schema, on free ports."""
    demo_config = replace(config, api_port=free_port(), stack_dir=tmp_path)
    args = ("demo", "--duration", "5", "--rate", "100", "--players", "50")
    out = leaderboard_cli(demo_config, *args, timeout=180)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted((tmp_path / "logs").glob("demo-*.log")))
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr}\n{logs}"
    assert "demo: check passed" in out.stdout
    assert "demo: stopped" in out.stdout
