"""G4: rebuilding from Kafka or from PostgreSQL yields the same members, scores and order as the live
boards, while a reader hitting the API never sees an error or an empty board. Also: an offset reset to the
earliest with Kafka's own CLI, replayed into the live generation, changes no score."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings
from tests.conftest import env_of
from tests.procs import (
    ApiProcess,
    ConsumerProcess,
    caught_up,
    leaderboard_cli,
    reset_offsets_to_earliest,
    wait_until,
    zscores,
)

REPO = Path(__file__).resolve().parents[1]
Snapshot = dict[str, list[tuple[str, float]]]


def snapshot(client: SyncClient, config: Settings) -> tuple[int, Snapshot]:
    """The active generation and every period of the global board: members and scores in order."""
    keys = Keys(config.redis_prefix)
    gen = int(client.hget(keys.meta("global"), "active") or 0)
    out: Snapshot = {}
    members = cast("set[bytes]", client.smembers(keys.periods("global", gen)))
    for period in sorted(p.decode() for p in members):
        rows = zscores(client, keys.board("global", gen, period), reverse=True)
        out[period] = [(m.decode(), s) for m, s in rows]
    return gen, out


def simulate(config: Settings, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", "simulate", "--json", *args],
        env=env_of(config),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(out.stdout))


class Reader(threading.Thread):
    """Hits the API as fast as it can and records anything that is not a non-empty 200."""

    def __init__(self, api: ApiProcess) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.stop_flag = threading.Event()
        self.requests = 0
        self.bad: list[str] = []

    def run(self) -> None:
        paths = [
            "/v1/leaderboards/global/entries?period=all_time&limit=10",
            "/v1/leaderboards/global/entries?period=monthly:2026-11&limit=5",
        ]
        while not self.stop_flag.is_set():
            for path in paths:
                status, body = self.api.get(path)
                self.requests += 1
                if status != 200 or not json.loads(body).get("entries"):
                    self.bad.append(f"{path}: {status} {body[:200]!r}")


@pytest.fixture
def live(config: Settings, tmp_path: Path) -> Iterator[tuple[ConsumerProcess, ApiProcess, Reader]]:
    simulate(
        config,
        "--count",
        "20000",
        "--rate",
        "0",
        "--players",
        "3000",
        "--duplicate-ratio",
        "0.05",
        "--invalid-ratio",
        "0.01",
        "--seed",
        "7",
        "--start",
        "2026-11-20T00:00:00Z",
        "--spread",
        "800000",
        "--display-names",
    )
    consumer = ConsumerProcess(config, tmp_path, name="first", LEADERBOARD_BATCH_SIZE="300")
    consumer.wait_ready()
    time.sleep(0.8)
    consumer.kill(signal.SIGKILL)  # a crash mid-stream, before the rebuilds
    consumer.proc.wait(10)
    consumer = ConsumerProcess(config, tmp_path, name="second")
    api = ApiProcess(config, tmp_path)
    reader = Reader(api)
    try:
        consumer.wait_ready()
        wait_until(lambda: caught_up(config), 120, "consumer caught up")
        api.wait_ready()
        reader.start()
        yield consumer, api, reader
    finally:
        reader.stop_flag.set()
        reader.join(10)
        api.stop()
        if consumer.alive():
            consumer.stop()


@pytest.mark.slow
def test_rebuilds_from_kafka_and_postgres_equal_the_live_boards_while_serving(
    config: Settings, live: tuple[ConsumerProcess, ApiProcess, Reader]
) -> None:
    _, _, reader = live
    client = sync_client(config)
    gen0, before = snapshot(client, config)
    assert len(before) >= 4
    assert len(before["all_time"]) > 1000
    for source in ("kafka", "postgres"):
        result = leaderboard_cli(config, "rebuild", "--from", source)
        assert result.returncode == 0, result.stderr
        gen, after = snapshot(client, config)
        assert gen != gen0, f"rebuild --from {source} did not flip to a new generation"
        assert after == before, f"rebuild --from {source} differs from the live boards"
        gen0 = gen
    # Old generations are dropped: only the live one's keys remain.
    leftovers = [
        k
        for k in client.scan_iter(match=f"{config.redis_prefix}:{{global}}:g*")
        if f":g{gen0}:" not in k.decode()
    ]
    assert leftovers == []
    time.sleep(0.5)
    assert reader.requests > 50
    assert reader.bad == []
    client.close()


@pytest.mark.slow
def test_rebuild_under_live_traffic_ends_equal_to_postgres(
    config: Settings, live: tuple[ConsumerProcess, ApiProcess, Reader]
) -> None:
    _, _, reader = live
    traffic = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leaderboard.cli",
            "simulate",
            "--rate",
            "800",
            "--duration",
            "8",
            "--players",
            "3000",
            "--seed",
            "8",
            "--start",
            "2026-11-25T00:00:00Z",
            "--duplicate-ratio",
            "0.05",
        ],
        env=env_of(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    result = leaderboard_cli(config, "rebuild", "--from", "postgres")
    assert result.returncode == 0, result.stderr
    assert traffic.wait(60) == 0
    wait_until(lambda: caught_up(config), 60, "consumer caught up after the traffic")
    verify = leaderboard_cli(config, "verify")
    assert verify.returncode == 0, verify.stderr
    assert reader.bad == []


@pytest.mark.slow
def test_offset_reset_to_earliest_changes_no_score(
    config: Settings, live: tuple[ConsumerProcess, ApiProcess, Reader], tmp_path: Path
) -> None:
    consumer, _, _ = live
    client = sync_client(config)
    gen, before = snapshot(client, config)
    assert consumer.stop() == 0
    reset_offsets_to_earliest(config)
    assert not caught_up(config)
    replay = ConsumerProcess(config, tmp_path, name="replay")
    try:
        replay.wait_ready()
        wait_until(lambda: caught_up(config), 120, "replay caught up")
        # Everything read again. The counter moves just after each batch's commit, so the last batch may show
        # committed before it is counted: wait for the count (bounded), never assume it.
        wait_until(
            lambda: replay.metric("leaderboard_consumer_events_consumed_total") >= 20000,
            30,
            "the replay to count every record",
        )
        assert snapshot(client, config) == (gen, before)
    finally:
        replay.stop()
    client.close()
