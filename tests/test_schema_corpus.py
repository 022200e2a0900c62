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


_Validator = validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})  # type: ignore[no-untyped-call]


class Corpus:
    """A shipped schema and its example folders (valid/, invalid/, ...), judged by the schema alone; the
    match-won corpus here and the moderation one (test_moderation_schema) share it."""

    def __init__(self, examples: str, schema: str) -> None:
        self.examples = Path(str(resources.files("schemas").joinpath(examples)))
        self.schema = json.loads(resources.files("schemas").joinpath(schema).read_text(encoding="utf-8"))
        self.validator = _Validator(self.schema, format_checker=_format_checker())

    def files(self, kind: str) -> list[Path]:
        found = sorted((self.examples / kind).glob("*.json"))
        assert found, f"no examples in {kind}/"
        return found

    def says(self, raw: bytes) -> tuple[bool, str]:
        """(valid, the schema's complaints) for one document's bytes."""
        try:
            # Strict UTF-8 first: json.loads(bytes) lets encoded surrogates through ("surrogatepass").
            document = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # invalid UTF-8 is a ValueError too
            return False, f"not JSON: {exc!r}"
        errors = [e.message for e in self.validator.iter_errors(document)]
        return not errors, "; ".join(errors)


CORPUS = Corpus("examples", "match_won.v1.json")
EXAMPLES, SCHEMA, VALIDATOR = CORPUS.examples, CORPUS.schema, CORPUS.validator
files, schema_says = CORPUS.files, CORPUS.says


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


BEYOND = [*files("out_of_range"), *files("beyond_schema")]


@pytest.mark.parametrize("path", BEYOND, ids=[f"{p.parent.name}/{p.stem}" for p in BEYOND])
def test_examples_the_schema_accepts_and_the_model_refuses(path: Path) -> None:
    """What JSON Schema cannot express: the instant range (out_of_range/: a pattern has no offset arithmetic)
    and other bounds such as nesting depth (beyond_schema/: the reason is the file name's prefix)."""
    raw = path.read_bytes()
    ok, why = schema_says(raw)
    assert ok, f"schema rejects: {why}"
    result = model.decode(raw)
    assert isinstance(result, model.Invalid), f"model accepts: {result}"
    if path.parent.name == "out_of_range":
        assert result.reason is model.Reason.OUT_OF_RANGE, result
    else:
        assert result.reason == model.Reason(path.stem.split("__")[0]), result


_TEXT_FIELDS = ("event_id", "match_id", "player_id", "game", "occurred_at", "mode", "region", "display_name")
_CONTROLS = ["\x00", "\x01", "\t", "\n", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
_NOT_UTF8 = [b"\xe9", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\xe2\x82"]


def _minimal() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EXAMPLES / "valid/all_fields.json").read_bytes())
    return event


@pytest.mark.parametrize("field", _TEXT_FIELDS)
@pytest.mark.parametrize("char", _CONTROLS, ids=[f"U+{ord(c):04X}" for c in _CONTROLS])
def test_control_characters_in_every_text_field(field: str, char: str) -> None:
    """C0, DEL and C1 anywhere in a text field: both validators refuse, the model says schema_violation."""
    event = _minimal()
    value = event[field]
    for where in (char + value, value[:1] + char + value[1:], value + char):
        for raw in (json.dumps({**event, field: where}).encode(), _raw_utf8({**event, field: where})):
            ok, _ = schema_says(raw)
            assert not ok, f"schema accepts {where!r} in {field}"
            result = model.decode(raw)
            assert isinstance(result, model.Invalid), f"model accepts {where!r} in {field}"
            assert result.reason is model.Reason.SCHEMA_VIOLATION, result
            assert f"$.{field}" in result.detail, result


def _raw_utf8(event: dict[str, Any]) -> bytes:
    """JSON with non-ASCII characters as raw UTF-8 (DEL and C1 unescaped), not \\u escapes."""
    return json.dumps(event, ensure_ascii=False).encode()


@pytest.mark.parametrize("field", [*_TEXT_FIELDS, "extra"])
@pytest.mark.parametrize("junk", _NOT_UTF8, ids=[b.hex() for b in _NOT_UTF8])
def test_invalid_utf8_in_every_text_field(field: str, junk: bytes) -> None:
    """Bytes that are not UTF-8 in any string, an ignored extra field too: undecodable, never an exception."""
    event = {**_minimal(), "extra": "ok"}
    marker = "\u2603"
    raw = _raw_utf8({**event, field: event[field][:1] + marker}).replace(marker.encode(), junk)
    ok, _ = schema_says(raw)
    assert not ok
    result = model.decode(raw)
    assert isinstance(result, model.Invalid), result
    assert result.reason is model.Reason.UNDECODABLE, result
    assert result.detail.startswith("not UTF-8"), result


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
@pytest.mark.parametrize("bracket", ["[]", "{}"])
def test_deep_nesting_is_refused_whatever_the_depth(depth: int, bracket: str) -> None:
    """Beyond MAX_DEPTH, whatever the depth: the same answer, not a RecursionError at some stack depth."""
    opening, closing = ('{"a":', "}") if bracket == "{}" else ("[", "]")
    inner = "1" if bracket == "{}" else ""
    text = json.dumps(_minimal())[:-1] + ', "extra": ' + opening * (depth - 1) + inner + closing * (depth - 1)
    deep = model.decode(text.encode() + b"}")
    assert isinstance(deep, model.Invalid), deep
    assert deep.reason is model.Reason.SCHEMA_VIOLATION, deep
    assert "nested more than" in deep.detail
    for truncated in (text.encode(), b"[" * depth):  # unbalanced: malformed, however deep
        result = model.decode(truncated)
        assert isinstance(result, model.Invalid), result
        assert result.reason is model.Reason.UNDECODABLE, result


def _sawtooth(levels: int) -> str:
    """[[],[[],[[],...]]]: one level per "[[]," and no long run of openers to give it away."""
    value = "[]"
    for _ in range(levels - 1):
        value = "[[]," + value + "]"
    return value


@pytest.mark.parametrize(
    ("value", "deep"),
    [
        ("[" * 32 + "]" * 32, True),
        ("[" * 31 + "]" * 31, False),
        ('[{"a":' * 16 + "1" + "}]" * 16, True),
        ('[{"a":' * 15 + "[1]" + "}]" * 15, False),
        (_sawtooth(32), True),
        (_sawtooth(31), False),
        ("[" + ",".join(["[" * 30 + "]" * 30] * 50) + "]", False),
        ('["' + "[" * 100 + '\\\\", "\\"' + "{" * 50 + '"]', False),  # brackets inside strings
    ],
)
def test_the_depth_bound_is_exact(value: str, deep: bool) -> None:
    """The event object is a level itself, so an extra field's value may nest 31 levels, not 32."""
    assert isinstance(json.loads(value), list)
    raw = (json.dumps(_minimal())[:-1] + ', "extra": ' + value + "}").encode()
    result = model.decode(raw)
    if deep:
        assert isinstance(result, model.Invalid), result
        assert result.reason is model.Reason.SCHEMA_VIOLATION, result
    else:
        assert isinstance(result, model.MatchWon), result


def test_decode_at_the_edge_of_the_stack() -> None:
    """The depth bound is the model's own: deep in the caller's stack, a 32-deep record still decodes."""
    raw = (EXAMPLES / "valid/extra_nested_32_deep.json").read_bytes()

    def nest(levels: int) -> object:
        return model.decode(raw) if levels == 0 else nest(levels - 1)

    assert isinstance(nest(900), model.MatchWon)


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
        ("score", st.integers(0, model.MAX_SCORE)),
        ("display_name", st.text(_NO_CONTROL, min_size=1, max_size=64)),
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
    st.sampled_from(
        ["\x7f", "a\x85", "\x9f", "\x1b[0m", "=a", "a=", "\u2028", "a" * 64, "a" * 65, "b" * 128]
    ),
    st.sampled_from(["a" * 129, "[" * 40, "{", "\\", '"']),
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
    for raw in (json.dumps(payload).encode(), _raw_utf8(payload)):
        assert model.decode(raw) == strict(raw)


def strict(raw: bytes) -> model.MatchWon | model.Invalid:
    """The slow reference: every byte check, then the struct with every pattern."""
    return model.check_bytes(raw) or model._decode_strict(raw)


_EXTRAS = st.one_of(
    st.integers(-(10**300), 10**300),
    st.floats(allow_nan=False),
    st.recursive(
        st.none() | st.booleans() | st.text(max_size=5), lambda c: st.lists(c, max_size=3), max_leaves=40
    ),
    st.integers(1, 40).map(lambda n: json.loads("[" * n + "]" * n)),
)


@settings(max_examples=400, deadline=None)
@given(
    payloads(),
    st.dictionaries(st.text(max_size=8), _EXTRAS, max_size=3),
    st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=3)), max_size=3),
)
def test_decode_never_raises_and_agrees_on_mangled_bytes(
    payload: dict[str, Any], extras: dict[str, Any], splices: list[tuple[int, bytes]]
) -> None:
    """Extra fields (deep, huge numbers) and arbitrary bytes spliced in: the strict answer, never a raise."""
    raw = _raw_utf8({**extras, **payload})
    for at, junk in splices:
        raw = raw[:at] + junk + raw[at:]
    assert model.decode(raw) == strict(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises_on_any_bytes(raw: bytes) -> None:
    assert isinstance(model.decode(raw), model.Invalid | model.MatchWon)
    assert model.decode(raw) == strict(raw)


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


def test_the_loose_struct_declares_the_wire_fields() -> None:
    """_Loose repeats _Wire without the patterns (schemas/model.py says why): the same fields, the same
    defaults, so the fast path cannot accept or drop a field the strict decoder would not."""
    import msgspec  # noqa: PLC0415 - only this test looks at struct declarations

    def shape(struct: type[msgspec.Struct]) -> list[tuple[str, object]]:
        return [(f.name, f.default) for f in msgspec.structs.fields(struct)]

    assert shape(model._Loose) == shape(model._Wire)
