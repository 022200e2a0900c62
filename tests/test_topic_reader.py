"""The one reader of a topic up to its end offsets: all committed, nothing aborted, raises on timeout."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from leaderboard.settings import Settings
from leaderboard.topic_reader import TopicReadError, read_to_end


def _produce(config: Settings, topic: str, values: list[bytes], abort: list[bytes]) -> None:
    """``values`` committed in one transaction, then ``abort`` in a transaction that is aborted."""
    producer = Producer({**config.kafka_common(), "transactional.id": f"reader-test-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for batch, commit in ((values, True), (abort, False)):
        producer.begin_transaction()
        for i, v in enumerate(batch):
            producer.produce(topic, v, key=str(i).encode(), headers=[("h", b"x"), ("empty", None)])
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)


def test_reads_every_committed_record_and_skips_aborted_ones(config: Settings) -> None:
    values = [f"v{i}".encode() for i in range(40)]
    _produce(config, config.dlq_topic, values, [b"aborted-1", b"aborted-2"])
    seen: list[tuple[int, int]] = []
    records = list(read_to_end(config, config.dlq_topic, 30, on_progress=lambda d, t: seen.append((d, t))))
    assert sorted(r.value or b"" for r in records) == sorted(values)
    assert all(r.headers == {"h": "x", "empty": ""} for r in records)
    assert seen, "progress is reported"
    done, total = seen[-1]
    assert done == total > len(values), "the position moved past the transaction markers"


def test_ranges_narrow_what_is_read(config: Settings) -> None:
    _produce(config, config.dlq_topic, [f"v{i}".encode() for i in range(30)], [])
    every = list(read_to_end(config, config.dlq_topic, 30))
    first = every[0]
    [only] = read_to_end(config, config.dlq_topic, 30, {first.partition: (first.offset, first.offset + 1)})
    assert (only.partition, only.offset, only.value) == (first.partition, first.offset, first.value)


def test_a_timeout_raises_instead_of_returning_part(config: Settings) -> None:
    _produce(config, config.dlq_topic, [b"a", b"b", b"c"], [])
    with pytest.raises(TopicReadError, match="did not reach its end within 0 s"):
        list(read_to_end(config, config.dlq_topic, 0))


def test_an_empty_topic_is_read_at_once_and_a_missing_one_raises(config: Settings) -> None:
    assert list(read_to_end(config, config.dlq_topic, 5)) == []
    with pytest.raises(TopicReadError, match="not found"):
        list(read_to_end(config, f"no-such-topic-{uuid.uuid4().hex}", 5))
