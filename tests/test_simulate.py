"""The simulator as a subprocess against the real broker: what it says it sent is on the topic."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from leaderboard.settings import Settings
from schemas import model
from tests.conftest import env_of
from tests.procs import watermarks

LEADERBOARD = str(Path(sys.executable).with_name("leaderboard"))
START = "2024-05-01T12:00:00Z"


def read_all(config: Settings, topic: str) -> list[tuple[int, bytes, bytes]]:
    """Every record up to the current end of each partition: (partition, key, value), in partition order."""
    consumer = Consumer(
        {**config.kafka_common(), "group.id": f"read-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, TopicPartition(topic, p)) for p in partitions}
        todo = {p for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        out: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 0.5):
                assert msg.error() is None, msg.error()
                p = msg.partition() or 0
                out.append((p, msg.key() or b"", msg.value() or b""))
                if (msg.offset() or 0) + 1 >= ends[p][1]:
                    todo.discard(p)
        assert not todo, f"partitions not read to the end: {todo}"
        return out
    finally:
        consumer.close()


def simulate(config: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEADERBOARD, "simulate", *args],
        env=env_of(config),
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def totals(
    records: list[tuple[int, bytes, bytes]],
) -> tuple[dict[str, int], dict[str, dict[str, int]], int, int]:
    """Per-player and per-game sums over distinct valid event_ids, plus counts of duplicates and invalid."""
    seen: set[str] = set()
    players: dict[str, int] = defaultdict(int)
    by_game: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    duplicates = invalid = 0
    for _, key, value in records:
        event = model.decode(value)
        if isinstance(event, model.Invalid):
            invalid += 1
            continue
        assert key == event.player_id.encode()
        if event.event_id in seen:
            duplicates += 1
            continue
        seen.add(event.event_id)
        players[event.player_id] += event.points
        by_game[event.game][event.player_id] += event.points
    return dict(players), {g: dict(b) for g, b in by_game.items()}, duplicates, invalid


def test_simulated_stream_matches_its_truth(config: Settings, tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.json"
    done = simulate(
        config,
        *("--count", "2000", "--seed", "7", "--rate", "0", "--start", START, "--spread", "3600"),
        *(
            "--duplicate-ratio",
            "0.05",
            "--invalid-ratio",
            "0.02",
            "--players",
            "300",
            "--modes",
            "ranked,casual",
        ),
        *("--truth", str(truth_file), "--json"),
    )
    summary = json.loads(done.stdout)
    assert summary["sent"] == summary["acked"] == 2000
    assert summary["failed"] == 0
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    records = read_all(config, config.topic)
    assert len(records) == 2000
    players, by_game, duplicates, invalid = totals(records)
    assert truth["events"] == sum(1 for _ in records) - duplicates - invalid
    assert players == truth["players"]
    assert by_game == truth["by_game"]
    assert duplicates == truth["duplicates"] == summary["duplicates"] > 0
    assert invalid == truth["invalid"] == summary["invalid"] > 0
    decoded = [model.decode(v) for _, _, v in records]
    kinds = {d.reason for d in decoded if isinstance(d, model.Invalid)}
    assert {model.Reason.UNDECODABLE, model.Reason.SCHEMA_VIOLATION} <= kinds
    skew = sorted(players.values(), reverse=True)
    assert skew[0] > 5 * skew[len(skew) // 2], "Zipf-like: the top player wins far more than the median"


def test_same_seed_same_stream(config: Settings, admin: AdminClient) -> None:
    other = f"{config.topic}-again"
    for future in admin.create_topics([NewTopic(other, num_partitions=12, replication_factor=1)]).values():
        future.result(timeout=30)
    try:
        common = ("--count", "1500", "--seed", "11", "--rate", "0", "--start", START, "--spread", "60")
        odd = ("--duplicate-ratio", "0.1", "--invalid-ratio", "0.1", "--display-names", "--regions", "eu,us")
        simulate(config, *common, *odd)
        simulate(config, *common, *odd, "--topic", other)
        first, second = read_all(config, config.topic), read_all(config, other)
        assert len(first) == 1500
        # sorted() is stable: per partition, offset order is kept
        assert sorted(first, key=lambda r: r[0]) == sorted(second, key=lambda r: r[0])
        stamps = {
            uuid.UUID(d.event_id).int >> 80
            for d in map(model.decode, (v for _, _, v in first))
            if isinstance(d, model.MatchWon)
        }
        start_ms = 1714564800000
        assert all(start_ms <= ms < start_ms + 60_000 for ms in stamps), "UUIDv7 time = the simulated clock"
    finally:
        admin.delete_topics([other])


def test_sigkill_loses_nothing_reported_acked(config: Settings, tmp_path: Path) -> None:
    acked_log = tmp_path / "acked.txt"
    proc = subprocess.Popen(
        [LEADERBOARD, "simulate", "--rate", "20000", "--duration", "60", "--acked-log", str(acked_log)],
        env=env_of(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not acked_log.exists() or acked_log.stat().st_size < 36 * 20000):
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    logged = acked_log.read_bytes().split()
    assert len(logged) >= 10000, "about a second of acknowledged ids"
    on_topic = {v[13:49] for _, _, v in read_all(config, config.topic)}
    missing = [i for i in logged if i not in on_topic]
    assert not missing, f"{len(missing)} acknowledged ids not on the topic"


def test_sigterm_flushes_and_writes_a_consistent_truth(config: Settings, tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.json"
    proc = subprocess.Popen(
        [
            *(LEADERBOARD, "simulate", "--rate", "5000", "--duration", "60", "--duplicate-ratio", "0.05"),
            *("--invalid-ratio", "0.05", "--truth", str(truth_file), "--json"),
        ],
        env=env_of(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "SIGTERM"
    truth = json.loads(truth_file.read_text())
    records = read_all(config, config.topic)
    assert len(records) == summary["acked"] == truth["acked"] == truth["sent"]
    players, by_game, duplicates, invalid = totals(records)
    assert players == truth["players"]
    assert by_game == truth["by_game"]
    assert (duplicates, invalid) == (truth["duplicates"], truth["invalid"])
    assert "simulate: sent=" in err


def test_bad_arguments_are_one_line_errors(config: Settings) -> None:
    done = simulate(config, "--rate", "0", check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == "leaderboard simulate: --rate 0 needs --count or --duration"
    done = simulate(config, "--count", "1", "--games", "Chess", check=False)
    assert done.returncode == 2
    assert "--games" in done.stderr
