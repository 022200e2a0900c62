"""One consumed record after decoding: the raw bytes and coordinates, and the event or why it is invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from schemas.model import Invalid, MatchWon, decode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    decoded: MatchWon | Invalid


def decode_messages(messages: Sequence[Message]) -> list[Record]:
    out = []
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(err)})
            continue
        value = msg.value()
        ts_type, ts = msg.timestamp()
        out.append(
            Record(
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                key=msg.key(),
                value=value,
                timestamp_ms=ts if ts_type else int(time.time() * 1000),
                decoded=decode(value),
            )
        )
    return out
