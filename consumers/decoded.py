"""One consumed record after decoding: the raw bytes and coordinates, and the event or why it is invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import msgspec
from confluent_kafka import KafkaError, Message

from schemas.model import Invalid, MatchWon, decode

log = logging.getLogger(__name__)


class Record(msgspec.Struct, frozen=True, gc=False):
    """gc=False: a batch makes thousands of these and none can be part of a reference cycle."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    decoded: MatchWon | Invalid


def decode_messages(messages: Sequence[Message]) -> list[Record]:
    out: list[Record] = []
    append = out.append
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(err)})
            continue
        value = msg.value()
        ts_type, ts = msg.timestamp()
        append(
            Record(
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                value,
                ts if ts_type else int(time.time() * 1000),
                decode(value),
            )
        )
    return out
