"""One consumed record after decoding: the raw bytes and coordinates, and the event or why it is invalid."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message

from leaderboard.aggregate import MAX_VALUE
from leaderboard.boards import Board
from schemas.model import Invalid, MatchWon, Reason, decode

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


def decode_messages(messages: Sequence[Message], max_future_skew_s: float) -> list[Record]:
    """Decode a batch; valid events dated more than ``max_future_skew_s`` after their record's broker
    timestamp become Invalid(FUTURE). The broker's timestamp, never this process's clock: a replay of
    the same records decides the same (the topic uses LogAppendTime, so producers cannot forge it)."""
    out: list[Record] = []
    append = out.append
    lowest: int | None = None
    untimed: set[int] = set()  # indexes of records without a broker timestamp (pre-0.10 message format)
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(err)})
            continue
        value = msg.value()
        ts_type, ts = msg.timestamp()
        if ts_type == TIMESTAMP_NOT_AVAILABLE:
            ts = int(time.time() * 1000)  # for latency metrics only: such records skip the future check
            untimed.add(len(out))
        elif lowest is None or ts < lowest:
            lowest = ts
        append(
            Record(
                msg.topic() or "",
                msg.partition() or 0,
                msg.offset() or 0,
                msg.key(),
                value,
                ts,
                decode(value),
            )
        )
    if lowest is not None:
        _mark_future(out, lowest, max_future_skew_s, untimed)
    return out


def _mark_future(records: list[Record], lowest_ms: int, skew_s: float, untimed: set[int]) -> None:
    """One datetime comparison per record: an event no later than the batch's lowest timestamp plus the
    skew passes for sure; only the rest are checked against their own record's timestamp."""
    skew = timedelta(seconds=skew_s)
    safe = _instant(lowest_ms) + skew
    for i, rec in enumerate(records):
        event = rec.decoded
        if isinstance(event, MatchWon) and event.occurred_at > safe and i not in untimed:
            stamp = _instant(rec.timestamp_ms)
            if event.occurred_at > stamp + skew:
                ahead = (event.occurred_at - stamp).total_seconds()
                detail = (
                    f"occurred_at {event.occurred_at.isoformat()} is {ahead:.0f} s after the record's broker"
                    f" timestamp {stamp.isoformat()} (at most {skew_s:g} s allowed)"
                )
                records[i] = msgspec.structs.replace(rec, decoded=Invalid(Reason.FUTURE, detail))


def mark_uncountable(records: list[Record], boards: Sequence[Board]) -> list[Record]:
    """Valid events that some board's filter takes but no board can count (each lacks the value it ranks
    by, or the value is past its bounds) become Invalid(NOT_COUNTABLE). An event no filter takes is left
    alone, as before: it is stored, not counted. Pure: decided by the event and the board definitions."""
    if all(b.value == "points" for b in boards):
        return records  # points are always present and within every board's bounds
    for i, rec in enumerate(records):
        event = rec.decoded
        if not isinstance(event, MatchWon):
            continue
        taking = [b for b in boards if b.accepts(event.game, event.mode, event.region)]
        if not taking or any(b.value_of(event.points, event.score) is not None for b in taking):
            continue
        needs = sorted({b.value for b in taking})
        detail = (
            f"no board counts it: boards {', '.join(b.id for b in taking)} rank by {' and '.join(needs)}"
            f" (score {'absent' if event.score is None else event.score}; bounds 0..{MAX_VALUE})"
        )
        records[i] = msgspec.structs.replace(rec, decoded=Invalid(Reason.NOT_COUNTABLE, detail))
    return records


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
