"""Dead letters: the original bytes, untouched, with why and where from in the headers."""

from __future__ import annotations

from dataclasses import dataclass

HEADER_REASON = "reason"
HEADER_DETAIL = "detail"
HEADER_TOPIC = "source-topic"
HEADER_PARTITION = "source-partition"
HEADER_OFFSET = "source-offset"
HEADER_TIMESTAMP = "source-timestamp-ms"
_DETAIL_MAX = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]


def dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
) -> DeadLetter:
    return DeadLetter(
        key=key,
        value=value,
        headers=[
            (HEADER_REASON, reason.encode()),
            (HEADER_DETAIL, detail[:_DETAIL_MAX].encode()),
            (HEADER_TOPIC, topic.encode()),
            (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode()),
            (HEADER_TIMESTAMP, str(timestamp_ms).encode()),
        ],
    )


def header_map(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers of a consumed dead letter as text (last value wins)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}
