"""The match-won v1 event as the consumer decodes it (msgspec: fast, typed, strict).

The JSON Schema file beside this module is the contract for other languages; tests run the example
corpus through both and require them to agree.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

MAX_POINTS: Final = 100_000
"""Largest points value of one event (docs/adr/0003-score-encoding.md explains the bound)."""

MAX_SCORE: Final = 2_147_483_647
"""Largest ``score`` (a signed 32-bit integer, what game servers usually hold). Boards that rank by score
count at most leaderboard.aggregate.MAX_VALUE (536,870,911); see docs/boards.md for each kind's bounds."""

MAX_DEPTH: Final = 32
"""Deepest nesting of arrays and objects a record may have (extra fields included): checked here, so the
answer never depends on the interpreter's recursion limit or the caller's stack depth."""

EARLIEST: Final = datetime(2020, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2050, 1, 1, tzinfo=UTC)
"""occurred_at must lie in [EARLIEST, LATEST): the score encoding's time field covers this span."""

# Field grammars, unanchored: each anchored for its own field below, and joined into one fast check.
_ID_RE = r"[a-z0-9][a-z0-9_-]{0,31}"
_CHAR_RE = r"[^\x00-\x1f\x7f-\x9f]"
_UUID_RE = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# The schema's RFC 3339 subset; msgspec's own datetime parser is more lenient, so the text is checked first.
_RFC3339_RE = r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:[0-5]\d(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
_ID = f"^{_ID_RE}\\Z"
_NO_CONTROL = f"^{_CHAR_RE}+\\Z"
_UUID = f"^{_UUID_RE}\\Z"
_RFC3339 = f"^{_RFC3339_RE}\\Z"

EventId = Annotated[str, msgspec.Meta(pattern=_UUID)]
PlayerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_CONTROL)]
Ident = Annotated[str, msgspec.Meta(pattern=_ID)]
Points = Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)]
WirePoints = Annotated[float, msgspec.Meta(ge=1, le=MAX_POINTS)]
"""JSON Schema counts 5.0 as an integer, so the wire accepts integral floats too (checked below)."""
Score = Annotated[int, msgspec.Meta(ge=0, le=MAX_SCORE)]
WireScore = Annotated[float, msgspec.Meta(ge=0, le=MAX_SCORE)]
Rfc3339 = Annotated[str, msgspec.Meta(pattern=_RFC3339)]
MatchId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_NO_CONTROL)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_CONTROL)]


class MatchWon(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One win. Field names are the wire names; occurred_at is an aware UTC datetime."""

    event_id: EventId
    match_id: MatchId
    player_id: PlayerId
    game: Ident
    occurred_at: datetime
    points: Points = 1
    score: Score | None = None
    """Optional ranking value (lap time in ms, strokes, a game score) for boards with value = "score"."""
    mode: Ident | None = None
    region: Ident | None = None
    display_name: DisplayName | None = None
    schema_version: Literal[1] = 1


# _Wire repeats MatchWon's fields on purpose: it types them as the wire carries them (occurred_at as text,
# points and score as JSON numbers); _event() checks the rest and builds the MatchWon.
class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """What the decoder validates: occurred_at still as text, checked against the schema's grammar."""

    event_id: EventId
    match_id: MatchId
    player_id: PlayerId
    game: Ident
    occurred_at: Rfc3339
    points: WirePoints = 1
    score: WireScore | None = None
    mode: Ident | None = None
    region: Ident | None = None
    display_name: DisplayName | None = None
    schema_version: Literal[1] = 1


# _Loose repeats _Wire's fields on purpose: a struct generated from _Wire (msgspec.defstruct) would be
# untyped for mypy, and the decoders' speed depends on these exact declarations. test_schema_corpus checks
# that both declare the same fields with the same defaults.
class _Loose(msgspec.Struct, frozen=True, kw_only=True):
    """_Wire minus its regex patterns, which _FAST_CHECK tests in one match instead of eight (~2x faster)."""

    event_id: str
    match_id: str
    player_id: str
    game: str
    occurred_at: str
    points: WirePoints = 1
    score: WireScore | None = None
    mode: str | None = None
    region: str | None = None
    display_name: str | None = None
    schema_version: Literal[1] = 1


class _Closed(_Loose, frozen=True, forbid_unknown_fields=True):
    """_Loose for the common record without unknown fields; then msgspec itself has checked every byte."""


# US (\x1f) separates the fields, which none may contain, so no field can spill into its neighbour; a present
# optional is prefixed with "=" and an absent one is empty, so no value can pose as "absent".
_SEP = "\x1f"
_FAST_CHECK: Final = re.compile(
    _SEP.join(
        (
            _UUID_RE,
            f"{_CHAR_RE}{{1,128}}",
            f"{_CHAR_RE}{{1,64}}",
            _ID_RE,
            f"(?:={_ID_RE})?",
            f"(?:={_ID_RE})?",
            f"(?:={_CHAR_RE}{{1,64}})?",
            _RFC3339_RE,
        )
    )
    + r"\Z"
)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND: Final = bytes.maketrans(b"{}", b"[]")
_OPENING_RUN: Final = b"[" * (MAX_DEPTH + 1)


class Reason(enum.StrEnum):
    """Why a record went to the dead-letter topic (the `reason` header)."""

    UNDECODABLE = "undecodable"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    OUT_OF_RANGE = "out_of_range"
    FUTURE = "future"
    """occurred_at too far ahead of the record's broker timestamp (decided by the consumer)."""
    PERIOD_CLOSED = "period_closed"
    SINK_REJECTED = "sink_rejected"
    """Valid for the schema, yet a sink (PostgreSQL) refused the record itself; the detail names the error."""
    TOO_OLD = "too_old"
    """occurred_at is before the event log's floor: its month is archived, copies are unrecognisable."""
    NOT_COUNTABLE = "not_countable"
    """Some board takes the event's game/mode/region, yet none can count it: each lacks the value it ranks
    by (``score`` absent) or the value is past that board's bounds (decided by the consumer)."""


class Invalid(msgspec.Struct, frozen=True):
    """A record that failed decoding or validation, with a reason and a human-readable detail."""

    reason: Reason
    detail: str


_decoder: Final = msgspec.json.Decoder(_Wire)
_fast_decoder: Final = msgspec.json.Decoder(_Loose)
_closed_decoder: Final = msgspec.json.Decoder(_Closed)
_encoder: Final = msgspec.json.Encoder()


def decode(raw: bytes | None) -> MatchWon | Invalid:
    """Decode and validate one record value; never raises, whatever the bytes.

    Fast path: the pattern-free struct plus one combined match. It accepts exactly what _Wire accepts;
    anything it refuses is decoded again by _Wire, whose error names the offending field.
    """
    if raw is None:
        return Invalid(Reason.UNDECODABLE, "empty record value (tombstone)")
    try:
        try:
            # No unknown fields: msgspec decodes every string (checking its UTF-8) and meets no nesting.
            wire: _Wire | _Loose = _closed_decoder.decode(raw)
        except (msgspec.MsgspecError, UnicodeDecodeError):
            # Unknown fields are skipped unchecked (and recursively): check their bytes first.
            if (bad := check_bytes(raw)) is not None:
                return bad
            try:
                wire = _fast_decoder.decode(raw)
            except msgspec.MsgspecError:
                return _decode_strict(raw)
        mode, region, name = wire.mode, wire.region, wire.display_name
        fields = _SEP.join(
            (
                wire.event_id,
                wire.match_id,
                wire.player_id,
                wire.game,
                "" if mode is None else "=" + mode,
                "" if region is None else "=" + region,
                "" if name is None else "=" + name,
                wire.occurred_at,
            )
        )
        if _FAST_CHECK.match(fields) is None:
            return _decode_strict(raw)
        return _event(wire)
    except Exception as exc:  # a decoder failure no check above foresaw: still a dead letter, never a crash
        return Invalid(Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}")


def check_bytes(raw: bytes) -> Invalid | None:
    """What msgspec does not check in the bytes of fields it skips: UTF-8, and nesting depth."""
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            return Invalid(Reason.UNDECODABLE, f"not UTF-8: {exc.reason} at byte {exc.start}")
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return None
    rest = _unpaired(raw)
    if not rest:
        return None
    if rest.count(b"[") != rest.count(b"]"):
        return Invalid(Reason.UNDECODABLE, "JSON is malformed: brackets do not pair up")
    return Invalid(Reason.SCHEMA_VIOLATION, f"JSON nested more than {MAX_DEPTH} levels deep")


def _unpaired(raw: bytes) -> bytes:
    """The brackets left after removing innermost pairs MAX_DEPTH times: empty iff the value nests at most
    MAX_DEPTH deep. Only C-speed passes over the bytes (a 2 MB record: tens of milliseconds, typically).

    Braces become brackets first: depth does not depend on the kind, a pass then removes exactly one
    level, and a mismatch of kinds is left to the JSON decoder, which meets it at most MAX_DEPTH deep.
    """
    # Strings first: without their escapes every '"' delimits one, so every other piece is outside them.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    rest = outside.translate(_ONE_KIND, _NOT_BRACKETS)
    if _OPENING_RUN in rest:  # deep nesting's usual shape, where each pass below would remove little
        return rest
    for _ in range(MAX_DEPTH):
        shorter = rest.replace(b"[]", b"")
        if len(shorter) == len(rest):
            break
        rest = shorter
    return rest


def _decode_strict(raw: bytes) -> MatchWon | Invalid:
    try:
        wire = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        detail = str(exc)
        if "$.schema_version" in detail:
            return Invalid(Reason.UNKNOWN_SCHEMA_VERSION, detail)
        return Invalid(Reason.SCHEMA_VIOLATION, detail)
    except msgspec.DecodeError as exc:
        return Invalid(Reason.UNDECODABLE, str(exc))
    return _event(wire)


def _event(wire: _Wire | _Loose) -> MatchWon | Invalid:
    """The checks no struct constraint expresses, then the event itself."""
    if not float(wire.points).is_integer():
        return Invalid(Reason.SCHEMA_VIOLATION, f"Expected an integer, got {wire.points} - at `$.points`")
    score = wire.score
    if score is not None and not float(score).is_integer():
        return Invalid(Reason.SCHEMA_VIOLATION, f"Expected an integer, got {score} - at `$.score`")
    try:
        occurred = datetime.fromisoformat(wire.occurred_at.upper())
    except ValueError as exc:
        return Invalid(Reason.SCHEMA_VIOLATION, f"occurred_at: {exc} - at `$.occurred_at`")
    if occurred.tzinfo is not UTC:  # "Z" parses to UTC itself: skip the conversion
        occurred = occurred.astimezone(UTC)
    if not EARLIEST <= occurred < LATEST:
        return Invalid(
            Reason.OUT_OF_RANGE, f"occurred_at {wire.occurred_at} is outside [2020-01-01, 2050-01-01) UTC"
        )
    return MatchWon(
        event_id=wire.event_id.lower(),
        match_id=wire.match_id,
        player_id=wire.player_id,
        game=wire.game,
        occurred_at=occurred,
        points=int(wire.points),
        score=None if score is None else int(score),
        mode=wire.mode,
        region=wire.region,
        display_name=wire.display_name,
    )


def encode(event: MatchWon) -> bytes:
    """The wire form (JSON, occurred_at in UTC with 'Z')."""
    return _encoder.encode(event)


def validate(payload: dict[str, object]) -> MatchWon:
    """Validate a Python mapping (SDK and HTTP ingest); raises ValueError with the reason."""
    result = decode(msgspec.json.encode(payload))
    if isinstance(result, Invalid):
        raise ValueError(f"{result.reason}: {result.detail}")
    return result
