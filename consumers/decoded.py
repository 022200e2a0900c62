"""One consumed record after decoding: the raw bytes and coordinates, and the event or why it is invalid."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.model import Invalid, MatchWon


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    decoded: MatchWon | Invalid
