"""dlq show / redrive against the real consumer: letters listed by reason; a redriven valid event counts
exactly once however often it is redriven; a still-invalid record simply comes back to the DLQ."""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import KafkaError, Message, Producer

from consumers import dlq
from leaderboard.settings import Settings
from tests.procs import ConsumerProcess, caught_up, dumps, leaderboard_cli, read_topic, wait_until
from tests.test_consumer import INVALID, board

PERIOD = "monthly:2026-11"


def cli(config: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return leaderboard_cli(config, "dlq", *args, timeout=120)


def win(player: str, points: int) -> bytes:
    return dumps(
        {
            "event_id": str(uuid.uuid4()),
            "match_id": f"m-{uuid.uuid4().hex[:8]}",
            "player_id": player,
            "game": "chess",
            "points": points,
            "occurred_at": "2026-11-20T10:00:00Z",
        }
    )


@pytest.fixture
def consumer(config: Settings, tmp_path: Path) -> Iterator[ConsumerProcess]:
    proc = ConsumerProcess(config, tmp_path)
    try:
        proc.wait_ready(90)
        yield proc
    finally:
        assert proc.stop() == 0


def settle(config: Settings) -> None:
    wait_until(lambda: caught_up(config), 90, "consumer to commit every offset")


def test_show_lists_dead_letters_and_redrive_counts_a_valid_event_exactly_once(
    config: Settings, consumer: ConsumerProcess, redis_client: redis.Redis
) -> None:
    producer = Producer({**config.kafka_common(), "enable.idempotence": True})
    invalid = [(v, r) for v, r in INVALID if r != "schema_violation"]
    for value, _ in invalid * 2:
        producer.produce(config.topic, value, b"bad")
    producer.produce(config.topic, win("alice", 3), b"alice")
    assert producer.flush(30) == 0
    settle(config)
    expected = Counter(r for _, r in invalid * 2)

    # A valid event that an old consumer wrongly refused: it sits in the DLQ with a reason header.
    rescued = win("rescued", 7)
    where: list[tuple[int, int]] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        assert err is None
        where.append((msg.partition() or 0, msg.offset() or 0))

    letter = dlq.dead_letter(
        key=b"rescued",
        value=rescued,
        reason="schema_violation",
        detail="points: rejected by schema 1.0 (bug)",
        topic=config.topic,
        partition=4,
        offset=123,
        timestamp_ms=0,
    )
    producer.produce(
        config.dlq_topic, letter.value, letter.key, headers=list(letter.headers), on_delivery=delivered
    )
    assert producer.flush(30) == 0
    expected["schema_violation"] += 1

    shown = cli(config, "show", "--json", "--limit", "100")
    assert shown.returncode == 0, shown.stderr
    doc = orjson.loads(shown.stdout)
    assert doc["counts"] == dict(expected)
    assert len(doc["records"]) == sum(expected.values())
    mine = [r for r in doc["records"] if r["reason"] == "schema_violation"]
    assert mine == [
        {
            "dlq_partition": where[0][0],
            "dlq_offset": where[0][1],
            "reason": "schema_violation",
            "detail": "points: rejected by schema 1.0 (bug)",
            "source_partition": 4,
            "source_offset": 123,
            "key": "rescued",
            "value": rescued.decode()[:200],
        }
    ]
    text = cli(config, "show", "--reason", "undecodable", "--limit", "1")
    assert text.returncode == 0, text.stderr
    for reason, n in expected.items():
        assert any(line.split() == [reason, str(n)] for line in text.stdout.splitlines()), text.stdout
    assert text.stdout.count("detail:") == 1
    assert "more not shown" in text.stderr

    assert cli(config, "redrive", "--reason", "schema_violation").returncode == 2  # asks for --yes
    dry = cli(config, "redrive", "--reason", "schema_violation", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would redrive {where[0][0]}:{where[0][1]}" in dry.stdout
    assert board(redis_client, config, PERIOD) == {"alice": 3}

    first = cli(config, "redrive", "--reason", "schema_violation", "--yes")
    assert first.returncode == 0, first.stderr
    assert "redriven 1 letter(s)" in first.stdout
    settle(config)
    assert board(redis_client, config, PERIOD) == {"alice": 3, "rescued": 7}

    # The same letter again, by its coordinates: the event_id is already stored, so nothing doubles.
    second = cli(config, "redrive", "--at", f"{where[0][0]}:{where[0][1]}", "--yes")
    assert second.returncode == 0, second.stderr
    settle(config)
    assert board(redis_client, config, PERIOD) == {"alice": 3, "rescued": 7}
    assert consumer.metric("leaderboard_consumer_events_duplicate_total") == 1
    redriven = [(k, h) for k, _, h in read_topic(config, config.topic) if "redriven-from" in h]
    assert [(k, h["redriven-from"]) for k, h in redriven] == [
        (b"rescued", f"{where[0][0]}/{where[0][1]}")
    ] * 2

    # Still-invalid records just come back with their reason.
    again = cli(config, "redrive", "--reason", "undecodable", "--yes")
    assert again.returncode == 0, again.stderr
    assert "dead-lettered again" in again.stderr
    settle(config)
    after = Counter(h["reason"] for _, _, h in read_topic(config, config.dlq_topic))
    assert after["undecodable"] == 2 * expected["undecodable"]
    assert after["schema_violation"] == 1  # the rescued event did not come back

    missing = cli(config, "redrive", "--at", "0:99999", "--yes")
    assert missing.returncode == 2
    assert "no dead letter at 0:99999" in missing.stderr
    assert cli(config, "redrive", "--at", "zero", "--yes").returncode == 2
