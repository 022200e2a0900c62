"""The producer SDK against the real broker: what it sends is what the consumer decodes."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from concurrent.futures import Future

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from leaderboard.settings import Settings
from producers.publisher import DeliveryReport, InvalidEvent, Publisher, PublishError
from schemas import model
from tests.procs import watermarks


def read_topic(
    config: Settings, topic: str, expected: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes, int]]:
    """(key, value, partition) of every record, until ``expected`` are read or ``timeout``."""
    consumer = Consumer(
        {
            **config.kafka_common(),
            "group.id": f"read-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes, bytes, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append((msg.key() or b"", msg.value() or b"", msg.partition() or 0))
    finally:
        consumer.close()
    return out


def record_count(config: Settings, topic: str) -> int:
    consumer = Consumer({**config.kafka_common(), "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = watermarks(consumer, TopicPartition(topic, partition))
            total += high - low
        return total
    finally:
        consumer.close()


EVENT = {
    "match_id": "m-42",
    "player_id": "alice",
    "game": "chess",
    "mode": "ranked",
    "points": 3,
    "occurred_at": "2024-05-01T17:30:00.5+05:30",
    "display_name": "Alice",
}


def test_publish_then_consume_decodes_to_the_same_event(config: Settings) -> None:
    with Publisher(config) as publisher:
        report = publisher.publish(EVENT).result(timeout=30)
    assert isinstance(report, DeliveryReport)
    assert report.topic == config.topic
    assert uuid.UUID(report.event_id).version == 7
    [(key, value, partition)] = read_topic(config, config.topic, 1)
    assert key == b"alice"
    assert partition == report.partition
    decoded = model.decode(value)
    assert isinstance(decoded, model.MatchWon)
    assert decoded == model.validate({**EVENT, "event_id": report.event_id})
    assert decoded.occurred_at.isoformat() == "2024-05-01T12:00:00.500000+00:00"


def test_kcat_record_decodes_like_the_sdk_record(config: Settings) -> None:
    """A client we did not write, sending the raw JSON line of the contract."""
    event_id = str(uuid.uuid4())
    line = (
        f'{{"event_id":"{event_id}","match_id":"m-42","player_id":"alice","game":"chess","mode":"ranked",'
        '"points":3,"occurred_at":"2024-05-01T17:30:00.5+05:30","display_name":"Alice","extra":"ignored"}'
    )
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            config.kafka_bootstrap,
            "-t",
            config.topic,
            "-k",
            "alice",
            "-X",
            "partitioner=murmur2_random",
        ],
        input=line.encode() + b"\n",
        check=True,
        timeout=30,
    )
    with Publisher(config) as publisher:
        publisher.publish({**EVENT, "event_id": event_id}).result(timeout=30)
    records = read_topic(config, config.topic, 2)
    assert len(records) == 2
    (k1, v1, p1), (k2, v2, p2) = records
    assert k1 == k2 == b"alice"
    assert p1 == p2, "same key, same partition whichever client sent it (murmur2)"
    assert v1 != v2
    assert model.decode(v1) == model.decode(v2)


def test_invalid_event_raises_before_send(config: Settings) -> None:
    with Publisher(config) as publisher:
        with pytest.raises(InvalidEvent) as caught:
            publisher.publish({**EVENT, "points": 0})
        assert caught.value.reason is model.Reason.SCHEMA_VIOLATION
        assert "points" in caught.value.detail
        with pytest.raises(InvalidEvent) as caught:
            publisher.publish({**EVENT, "schema_version": 2})
        assert caught.value.reason is model.Reason.UNKNOWN_SCHEMA_VERSION
        with pytest.raises(InvalidEvent) as caught:
            publisher.publish({**EVENT, "occurred_at": "2051-01-01T00:00:00Z"})
        assert caught.value.reason is model.Reason.OUT_OF_RANGE
        assert publisher.sent == 0
    assert record_count(config, config.topic) == 0


def test_context_exit_flushes_everything(config: Settings) -> None:
    with Publisher(config, poll_thread=False, report_success=False) as publisher:
        for i in range(5000):
            publisher.publish_raw(f"p{i % 50}".encode(), b'{"not": "validated"}')
    assert publisher.pending() == 0
    assert publisher.acked() == 5000
    assert record_count(config, config.topic) == 5000


def test_future_is_awaitable_from_asyncio(config: Settings) -> None:
    async def main(publisher: Publisher) -> list[DeliveryReport]:
        futures = [publisher.publish({**EVENT, "match_id": f"m-{i}"}) for i in range(20)]
        return await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))

    with Publisher(config) as publisher:
        reports = asyncio.run(main(publisher))
    assert len({r.event_id for r in reports}) == 20
    assert record_count(config, config.topic) == 20


def test_undeliverable_records_fail_loudly() -> None:
    """No broker: the future fails and close() raises rather than pretending."""
    dead = Settings(kafka_bootstrap="127.0.0.1:1", topic="nowhere")
    publisher = Publisher(dead, extra={"message.timeout.ms": 1000})
    future: Future[DeliveryReport] = publisher.publish(EVENT)
    with pytest.raises(KafkaException):
        future.result(timeout=20)
    publisher.publish_raw(b"k", b"v")
    with pytest.raises(PublishError):
        publisher.close(timeout=10)
