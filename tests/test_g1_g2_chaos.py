"""G1 and G2 under chaos: a 55,000-record simulated stream with 5% re-published duplicates and malformed
records, consumed while one consumer is SIGKILLed three times at random moments and a second one joins and
leaves the group. Every board must equal the simulator's truth; PostgreSQL must hold each valid event once;
the dead-letter topic every invalid record with its reason."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg
import pytest

from leaderboard import scoring
from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings
from tests.conftest import env_of
from tests.procs import ConsumerProcess, caught_up, read_topic, wait_until, zscores

COUNT = 55_000


def all_periods(client: SyncClient, config: Settings) -> dict[str, dict[str, int]]:
    keys = Keys(config.redis_prefix)
    gen = int(client.hget(keys.meta("global"), "active") or 0)
    out = {}
    periods = cast("set[bytes]", client.smembers(keys.periods("global", gen)))
    for period in periods:
        key = keys.board("global", gen, period.decode())
        out[period.decode()] = {m.decode(): scoring.points_of(s) for m, s in zscores(client, key)}
    return out


def _past_start() -> str:
    """Eight days after the first of last month: the 17-day spread (back from the start) crosses a month
    boundary, weeks and days, and no win is dated after its broker timestamp (reason `future`)."""
    first = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    previous = (first - timedelta(days=1)).replace(day=1)
    return (previous + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
def test_exactly_once_and_nothing_lost_through_kills_and_rebalances(config: Settings, tmp_path: Path) -> None:
    rnd = random.Random(1234)
    truth_path = tmp_path / "truth.json"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leaderboard.cli",
            "simulate",
            "--count",
            str(COUNT),
            "--rate",
            "3500",
            "--players",
            "20000",
            "--duplicate-ratio",
            "0.05",
            "--invalid-ratio",
            "0.01",
            "--seed",
            "99",
            "--start",
            _past_start(),
            "--spread",
            "1500000",
            "--display-names",
            "--truth",
            str(truth_path),
            "--json",
        ],
        env=env_of(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    env = {"LEADERBOARD_BATCH_SIZE": "250"}
    a = ConsumerProcess(config, tmp_path, name="a", **env)
    b: ConsumerProcess | None = None
    kills = 0
    try:
        a.wait_ready()
        plan = ["kill", "join", "kill", "leave", "kill"]
        for step in plan:
            time.sleep(rnd.uniform(1.0, 3.0))
            if step == "kill":
                a.kill(signal.SIGKILL)
                a.proc.wait(10)
                kills += 1
                a = ConsumerProcess(config, tmp_path, name=f"a{kills}", **env)
            elif step == "join":
                b = ConsumerProcess(config, tmp_path, name="b", **env)
                b.wait_ready()  # joined: a SIGTERM before its handlers exist would be a kill, not a leave
            elif b is not None:
                assert b.stop() == 0
        summary = json.loads(sim.communicate(timeout=120)[0])
        assert sim.returncode == 0
        assert summary["failed"] == 0
        wait_until(lambda: caught_up(config), 240, "the group to commit every offset")
    finally:
        for proc in (a, b):
            if proc is not None and proc.alive():
                proc.stop()
        if sim.poll() is None:
            sim.kill()
    assert kills == 3
    truth = json.loads(truth_path.read_text())
    expected: dict[str, int] = truth["players"]

    # G1: every board-period equals the truth (all_time exactly; each period kind partitions the events).
    client = sync_client(config)
    boards = all_periods(client, config)
    assert boards["all_time"] == expected
    for kind in ("monthly", "weekly", "daily"):
        summed: dict[str, int] = defaultdict(int)
        keys = [p for p in boards if p.startswith(kind + ":")]
        assert len(keys) >= 2  # the stream spans several periods of each kind
        for p in keys:
            for player, pts in boards[p].items():
                summed[player] += pts
        assert dict(summed) == expected, kind

    # G2: PostgreSQL holds each valid event exactly once; dead letters hold every invalid one with a reason.
    with psycopg.connect(config.database_url) as conn:
        total, distinct, points = conn.execute(
            "SELECT count(*), count(DISTINCT event_id), coalesce(sum(points), 0) FROM events"
        ).fetchone() or (0, 0, 0)
    assert total == distinct == truth["events"]
    assert points == sum(expected.values())
    letters = read_topic(config, config.dlq_topic)
    reasons = Counter(h["reason"] for _, _, h in letters)
    assert sum(reasons.values()) == truth["invalid"] > 0
    assert set(reasons) <= {"undecodable", "schema_violation", "unknown_schema_version", "out_of_range"}
    assert truth["events"] + truth["duplicates"] + truth["invalid"] == truth["sent"] == COUNT
    client.close()
