"""Read a Kafka topic up to the end offsets it had when reading began, or fail: never a partial answer.

The one reader for tools and tests that must see *everything* (``leaderboard dlq``, absence checks): a
result cut short at a deadline would let "nothing there" pass for "not read yet", so a timeout raises.
read_committed: records of aborted transactions are skipped; their markers still take offsets, so progress
is measured by the consumer's position, not by the records seen.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from leaderboard.errors import UserError
from leaderboard.settings import Settings

METADATA_TIMEOUT_S = 10.0


class TopicReadError(UserError):
    """The topic is missing, a read failed, or its end was not reached in time (one readable line)."""


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


def headers_of(msg: Message) -> dict[str, str]:
    """A record's headers as text (undecodable bytes replaced; a header without a value is "")."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.decode("utf-8", "replace") if isinstance(v, bytes) else (v or "") for k, v in pairs}


_NO_LEADER_YET = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}


def _watermarks(consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
    """(low, high); retried while a fresh topic's partition leaders are still being elected (bounded)."""
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return int(low), int(high)


def _bounds(
    consumer: Consumer, config: Settings, topic: str, ranges: Mapping[int, tuple[int, int]] | None
) -> dict[int, tuple[int, int]]:
    """partition -> [first, end) to read: the watermarks now, narrowed to ``ranges``; empty ones left out."""
    meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        raise TopicReadError(f"topic {topic!r} not found at {config.kafka_bootstrap}")
    out: dict[int, tuple[int, int]] = {}
    for p in meta.partitions:
        if ranges is not None and p not in ranges:
            continue
        low, high = _watermarks(consumer, TopicPartition(topic, p))
        if ranges is not None:
            low, high = max(low, ranges[p][0]), min(high, ranges[p][1])
        if high > low:
            out[p] = (low, high)
    return out


def read_to_end(
    config: Settings,
    topic: str,
    timeout_s: float,
    ranges: Mapping[int, tuple[int, int]] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Record]:
    """Every committed record of ``topic`` (or of ``ranges``: partition -> [first, end)) up to the end
    offsets seen at start. ``on_progress(offsets_done, offsets_total)`` after each poll.

    Raises TopicReadError if the topic is missing, a read fails, or the end is not reached in ``timeout_s``.
    """
    consumer = Consumer(
        {
            **config.kafka_common(),
            "group.id": f"{config.consumer_group}-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }
    )
    try:
        try:
            bounds = _bounds(consumer, config, topic, ranges)
        except KafkaException as exc:
            raise TopicReadError(f"reading {topic}: {exc.args[0] if exc.args else exc}") from None
        if not bounds:
            return
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in bounds.items()])
        total = sum(hi - lo for lo, hi in bounds.values())
        positions = {p: lo for p, (lo, _) in bounds.items()}
        deadline = time.monotonic() + timeout_s

        def done() -> int:
            return sum(min(positions[p], hi) - lo for p, (lo, hi) in bounds.items())

        while any(positions[p] < hi for p, (_, hi) in bounds.items()):
            if time.monotonic() > deadline:
                raise TopicReadError(
                    f"reading {topic} did not reach its end within {timeout_s:.0f} s "
                    f"({done():,}/{total:,} offsets)"
                )
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise TopicReadError(f"reading {topic} failed: {err}")
                p, offset = msg.partition() or 0, msg.offset() or 0
                if p not in bounds or offset >= bounds[p][1]:
                    continue
                positions[p] = max(positions[p], offset + 1)
                yield Record(p, offset, msg.key(), msg.value(), headers_of(msg))
            for tp in consumer.position([TopicPartition(topic, p) for p in bounds]):
                if tp.offset >= 0:
                    positions[tp.partition] = max(positions[tp.partition], tp.offset)
            if on_progress is not None:
                on_progress(done(), total)
    finally:
        consumer.close()
