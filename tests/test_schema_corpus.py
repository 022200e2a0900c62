"""The JSON Schema (contract for other languages) and the msgspec model (what the consumer runs) agree.

Every file in schemas/examples/ goes through both. ``date-time`` is really checked: jsonschema only
asserts it with ``rfc3339-validator`` installed, so without it an equivalent checker is registered here.
"""

from __future__ import annotations

import json
import re
from calendar import monthrange
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from schemas import model

EXAMPLES = Path(str(resources.files("schemas").joinpath("examples")))
SCHEMA = json.loads(resources.files("schemas").joinpath("match_won.v1.json").read_text(encoding="utf-8"))

_RFC3339 = re.compile(
    r"^(\d{4})-(0[1-9]|1[0-2])-(\d{2})T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$",
    re.IGNORECASE | re.ASCII,
)


def _rfc3339(value: object) -> bool:
    """What rfc3339-validator checks: RFC 3339 section 5.6 grammar plus the day of the month."""
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if match is None:
        return False
    year, month, day = int(match[1]), int(match[2]), int(match[3])
    return 1 <= day <= monthrange(year, month)[1]


def _format_checker() -> FormatChecker:
    checker: FormatChecker = Draft202012Validator.FORMAT_CHECKER
    if "date-time" in checker.checkers:
        return checker
    checker = FormatChecker()  # rfc3339-validator is not installed: register an equivalent
    checker.checks("date-time")(_rfc3339)
    return checker


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``pattern`` with ECMA-262 semantics: ``$`` is the end of input (Python's also matches before a final
    newline, which would let "id\\n" through as a second idempotency key)."""
    del validator, schema
    if isinstance(instance, str) and not re.search(pattern.replace("$", r"\Z"), instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})
VALIDATOR = _Validator(SCHEMA, format_checker=_format_checker())


def files(kind: str) -> list[Path]:
    found = sorted((EXAMPLES / kind).glob("*.json"))
    assert found, f"no examples in {kind}/"
    return found


def schema_says(raw: bytes) -> tuple[bool, str]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        return False, f"not JSON: {exc}"
    errors = [e.message for e in VALIDATOR.iter_errors(document)]
    return not errors, "; ".join(errors)


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_date_time_format_is_asserted() -> None:
    assert not VALIDATOR.is_valid(
        {**json.loads((EXAMPLES / "valid/minimal.json").read_bytes()), "occurred_at": "2024-02-30T00:00:00Z"}
    )
    assert _rfc3339("2024-02-29T00:00:00Z")
    assert not _rfc3339("2023-02-29T00:00:00Z")


def test_corpus_is_big_enough() -> None:
    assert len(files("valid")) >= 12
    assert len(files("invalid")) >= 20


@pytest.mark.parametrize("path", files("valid"), ids=ids(files("valid")))
def test_valid_examples(path: Path) -> None:
    raw = path.read_bytes()
    ok, why = schema_says(raw)
    assert ok, f"schema rejects: {why}"
    result = model.decode(raw)
    assert isinstance(result, model.MatchWon), result
    assert result.occurred_at.utcoffset() == timedelta(0)
    assert result.event_id == result.event_id.lower()


@pytest.mark.parametrize("path", files("invalid"), ids=ids(files("invalid")))
def test_invalid_examples(path: Path) -> None:
    raw = path.read_bytes()
    ok, _ = schema_says(raw)
    assert not ok, "schema accepts"
    result = model.decode(raw)
    assert isinstance(result, model.Invalid), f"model accepts: {result}"
    expected = path.stem.split("__")[0]
    assert result.reason == model.Reason(expected), result


@pytest.mark.parametrize("path", files("out_of_range"), ids=ids(files("out_of_range")))
def test_out_of_range_examples(path: Path) -> None:
    """The schema cannot express the instant range (its pattern has no offset arithmetic)."""
    raw = path.read_bytes()
    ok, why = schema_says(raw)
    assert ok, f"schema rejects: {why}"
    result = model.decode(raw)
    assert isinstance(result, model.Invalid)
    assert result.reason is model.Reason.OUT_OF_RANGE


_NO_CONTROL = st.characters(
    exclude_categories=["Cs"],
    exclude_characters="".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)])),
)
_IDENT = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    instant = draw(st.datetimes(datetime(2019, 12, 31), datetime(2050, 1, 2), timezones=_ZONES))
    event: dict[str, Any] = {
        "event_id": str(draw(st.uuids())),
        "match_id": draw(st.text(_NO_CONTROL, min_size=1, max_size=128)),
        "player_id": draw(st.text(_NO_CONTROL, min_size=1, max_size=64)),
        "game": draw(_IDENT),
        "occurred_at": instant.isoformat(),
    }
    for name, strategy in (
        ("mode", _IDENT),
        ("region", _IDENT),
        ("points", st.integers(1, model.MAX_POINTS)),
        ("display_name", st.text(min_size=1, max_size=64)),
    ):
        if draw(st.booleans()):
            event[name] = draw(strategy)
    if draw(st.booleans()):
        event["event_id"] = event["event_id"].upper()
    return event


@settings(max_examples=300, deadline=None)
@given(payloads())
def test_accepted_events_round_trip_and_satisfy_the_schema(payload: dict[str, Any]) -> None:
    raw = json.dumps(payload).encode()
    decoded = model.decode(raw)
    assume(isinstance(decoded, model.MatchWon))
    assert isinstance(decoded, model.MatchWon)
    ok, why = schema_says(raw)
    assert ok, f"model accepts but schema rejects: {why}"
    wire = model.encode(decoded)
    assert model.decode(wire) == decoded
    ok, why = schema_says(wire)
    assert ok, f"schema rejects encode() output {wire!r}: {why}"


# Values that probe the fast path's combined match: separators, NUL, empties, near misses of each grammar.
_TRICKY = st.one_of(
    st.none(),
    st.sampled_from(["", "\x1f", "\x00", "a\x1fb", "ranked\x1f", "\x00\x1f", "A", "-a", "a" * 32, "a" * 33]),
    st.sampled_from(["2026-11-29T10:00:00Z", "2026-11-29t10:00:00z", "2026-11-29T10:00:60Z", "2026-11-29"]),
    st.sampled_from(["0192f0b4-7a6e-7c3d-9b1e-5f2a4c6d8e0f", "0192F0B4-7A6E-7C3D-9B1E-5F2A4C6D8E0F"]),
    st.text(max_size=70),
    st.integers(-1, 3),
)
_FIELDS = ("event_id", "match_id", "player_id", "game", "occurred_at", "mode", "region", "display_name")


@settings(max_examples=600, deadline=None)
@given(payloads(), st.dictionaries(st.sampled_from(_FIELDS), _TRICKY, max_size=3))
def test_fast_path_agrees_with_the_strict_decoder(payload: dict[str, Any], changes: dict[str, Any]) -> None:
    """decode() takes a shortcut for well-formed records; it must answer exactly as the strict decoder."""
    payload.update(changes)
    raw = json.dumps(payload).encode()
    assert model.decode(raw) == model._decode_strict(raw)


def test_fast_path_refuses_a_field_spilling_into_its_neighbour() -> None:
    base = json.loads((files("valid")[0]).read_bytes())
    base.update(game="arena", mode="ranked", region="eu", player_id="p1")
    cases = [("player_id", "p1\x1farena"), ("mode", "\x00"), ("region", "eu\x1fx"), ("mode", "")]
    for name, value in [*cases, ("region", "=eu")]:
        raw = json.dumps({**base, name: value}).encode()
        result = model.decode(raw)
        assert isinstance(result, model.Invalid), (name, value)
        assert result == model._decode_strict(raw)
        assert f"$.{name}" in result.detail


def test_valid_examples_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agreement test above would also pass if the fast path refused everything: it must not."""

    def strict(raw: bytes) -> object:
        raise AssertionError(f"strict decoder used for a valid record: {raw!r}")

    monkeypatch.setattr(model, "_decode_strict", strict)
    for path in files("valid"):
        assert isinstance(model.decode(path.read_bytes()), model.MatchWon), path
