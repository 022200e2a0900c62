"""The match-won v1 event as the consumer decodes it (msgspec: fast, typed, strict).

The JSON Schema file beside this module is the contract for other languages; tests run the example
corpus through both and require them to agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

MAX_POINTS: Final = 100_000
"""Largest points value of one event (docs/adr/0003-score-encoding.md explains the bound)."""

EARLIEST: Final = datetime(2020, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2050, 1, 1, tzinfo=UTC)
"""occurred_at must lie in [EARLIEST, LATEST): the score encoding's time field covers this span."""

_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

EventId = Annotated[str, msgspec.Meta(pattern=_UUID)]
PlayerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_CONTROL)]
Ident = Annotated[str, msgspec.Meta(pattern=_ID)]
Points = Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class MatchWon(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One win. Field names are the wire names."""

    event_id: EventId
    match_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    player_id: PlayerId
    game: Ident
    occurred_at: AwareDatetime
    points: Points = 1
    mode: Ident | None = None
    region: Ident | None = None
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    schema_version: Literal[1] = 1


class Reason(enum.StrEnum):
    """Why a record went to the dead-letter topic (the `reason` header)."""

    UNDECODABLE = "undecodable"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    OUT_OF_RANGE = "out_of_range"
    PERIOD_CLOSED = "period_closed"


class Invalid(msgspec.Struct, frozen=True):
    """A record that failed decoding or validation, with a reason and a human-readable detail."""

    reason: Reason
    detail: str


_decoder: Final = msgspec.json.Decoder(MatchWon)
_encoder: Final = msgspec.json.Encoder()


def decode(raw: bytes | None) -> MatchWon | Invalid:
    """Decode and validate one record value; never raises."""
    if raw is None:
        return Invalid(Reason.UNDECODABLE, "empty record value (tombstone)")
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        detail = str(exc)
        if "$.schema_version" in detail:
            return Invalid(Reason.UNKNOWN_SCHEMA_VERSION, detail)
        return Invalid(Reason.SCHEMA_VIOLATION, detail)
    except msgspec.DecodeError as exc:
        return Invalid(Reason.UNDECODABLE, str(exc))
    if not EARLIEST <= event.occurred_at < LATEST:
        return Invalid(
            Reason.OUT_OF_RANGE,
            f"occurred_at {event.occurred_at.isoformat()} is outside [2020-01-01, 2050-01-01) UTC",
        )
    occurred, eid = event.occurred_at, event.event_id
    if occurred.tzinfo is not UTC or (not eid.islower() and eid.lower() != eid):
        event = msgspec.structs.replace(event, occurred_at=occurred.astimezone(UTC), event_id=eid.lower())
    return event


def encode(event: MatchWon) -> bytes:
    """The wire form (JSON, occurred_at in UTC with 'Z')."""
    return _encoder.encode(event)


def validate(payload: dict[str, object]) -> MatchWon:
    """Validate a Python mapping (SDK and HTTP ingest); raises ValueError with the reason."""
    result = decode(msgspec.json.encode(payload))
    if isinstance(result, Invalid):
        raise ValueError(f"{result.reason}: {result.detail}")
    return result
