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
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka.admin import AdminClient

from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient, sync_client
from leaderboard.settings import Settings
from tests.conftest import env_of, isolated
from tests.procs import (
    ApiProcess,
    ConsumerProcess,
    caught_up,
    end_offsets,
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


@dataclass
class Live:
    """The module's services: a consumer (replaced when a test restarts it), an API and its reader."""

    config: Settings
    consumer: ConsumerProcess
    api: ApiProcess
    reader: Reader
    tmp: Path


@pytest.fixture(scope="module")
def live(
    base_settings: Settings, admin: AdminClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """20,000 simulated records consumed through a crash, then served while a reader hammers the API.

    Set up once for the module (it costs a simulate, a SIGKILL and the dead member's session timeout): each
    test compares the boards against a snapshot it takes itself, so what an earlier test added (more events,
    a new generation) is part of its "before"; the reader's errors accumulate over every test."""
    tmp = tmp_path_factory.mktemp("g4")
    with isolated(base_settings, admin, (12, 3, 3)) as config:
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
        consumer = ConsumerProcess(config, tmp, name="first", LEADERBOARD_BATCH_SIZE="300")
        consumer.wait_ready()
        time.sleep(0.8)
        consumer.kill(signal.SIGKILL)  # a crash mid-stream, before the rebuilds
        consumer.proc.wait(10)
        consumer = ConsumerProcess(config, tmp, name="second")
        api = ApiProcess(config, tmp)
        world = Live(config, consumer, api, Reader(api), tmp)
        try:
            consumer.wait_ready()
            wait_until(lambda: caught_up(config), 120, "consumer caught up")
            api.wait_ready()
            world.reader.start()
            yield world
        finally:
            world.reader.stop_flag.set()
            world.reader.join(10)
            api.stop()
            if world.consumer.alive():
                world.consumer.stop()


@pytest.mark.slow
def test_rebuilds_from_kafka_and_postgres_equal_the_live_boards_while_serving(live: Live) -> None:
    config, reader = live.config, live.reader
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
def test_rebuild_under_live_traffic_ends_equal_to_postgres(live: Live) -> None:
    config, reader = live.config, live.reader
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
def test_offset_reset_to_earliest_changes_no_score(live: Live) -> None:
    config = live.config
    client = sync_client(config)
    gen, before = snapshot(client, config)
    assert live.consumer.stop() == 0
    reset_offsets_to_earliest(config)
    assert not caught_up(config)
    records = sum(end_offsets(config, config.topic).values())  # every record, an earlier test's included
    assert records >= 20000
    replay = live.consumer = ConsumerProcess(config, live.tmp, name="replay")  # the module's from now on
    replay.wait_ready()
    wait_until(lambda: caught_up(config), 120, "replay caught up")
    # Everything read again. The counter moves just after each batch's commit, so the last batch may show
    # committed before it is counted: wait for the count (bounded), never assume it.
    wait_until(
        lambda: replay.metric("leaderboard_consumer_events_consumed_total") >= records,
        30,
        "the replay to count every record",
    )
    assert snapshot(client, config) == (gen, before)
    assert live.reader.bad == []
    client.close()
