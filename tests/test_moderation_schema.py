"""moderation.v1.json (the contract for other languages) and schemas.moderation (what the product runs) agree.

Every file in schemas/moderation_examples/ goes through both, with the same strict validator that the
match-won corpus test uses (ECMA ``$``, ``date-time`` really asserted).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import moderation
from tests.test_schema_corpus import Corpus, _Validator

CORPUS = Corpus("moderation_examples", "moderation.v1.json")
SCHEMA = CORPUS.schema
files, schema_says = CORPUS.files, CORPUS.says


def test_schema_is_valid_2020_12() -> None:
    _Validator.check_schema(SCHEMA)


def test_corpus_covers_every_kind() -> None:
    kinds = {json.loads(p.read_bytes())["kind"] for p in files("valid")}
    assert kinds == set(moderation.KINDS)
    assert len(files("invalid")) >= 40


@pytest.mark.parametrize("path", files("valid"), ids=[p.stem for p in files("valid")])
def test_valid_examples(path: Path) -> None:
    raw = path.read_bytes()
    ok, why = schema_says(raw)
    assert ok, f"schema rejects: {why}"
    action = moderation.decode(raw)
    assert not isinstance(action, moderation.Invalid), action.detail
    # What is stored and published satisfies the schema too, and decodes to itself.
    wire = moderation.encode(action)
    ok, why = schema_says(wire)
    assert ok, f"schema rejects encode() output: {why}"
    assert moderation.decode(wire) == action


# Same corpus check as test_schema_corpus.py's on purpose: each schema's corpus runs against its own model.
@pytest.mark.parametrize("path", files("invalid"), ids=[p.stem for p in files("invalid")])
def test_invalid_examples(path: Path) -> None:
    raw = path.read_bytes()
    ok, _ = schema_says(raw)
    assert not ok, "schema accepts"
    result = moderation.decode(raw)
    assert isinstance(result, moderation.Invalid), f"model accepts: {result}"
    assert result.detail


@pytest.mark.parametrize("path", files("beyond_schema"), ids=[p.stem for p in files("beyond_schema")])
def test_beyond_schema_examples(path: Path) -> None:
    """Instant ranges and window order: the schema cannot express them, the model refuses."""
    raw = path.read_bytes()
    ok, why = schema_says(raw)
    assert ok, f"schema rejects: {why}"
    assert isinstance(moderation.decode(raw), moderation.Invalid)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"\xff\xfe", b'{"kind": "erase", "player_id": "\xc3"}', b"[" * 10_000, b"null"]
)
def test_garbage_is_invalid_never_an_exception(raw: bytes) -> None:
    assert isinstance(moderation.decode(raw), moderation.Invalid)


def test_normalises_ids_and_instants() -> None:
    eid = str(uuid.uuid4())
    action = moderation.validate(
        {
            "kind": "void",
            "action_id": eid.upper(),
            "actor": "a",
            "reason": "r",
            "at": "2024-06-01T14:00:00+02:00",
            "event_ids": [eid.upper(), eid],  # not exact repeats: one id after lower-casing
        }
    )
    assert isinstance(action, moderation.Void)
    assert action.action_id == eid
    assert action.event_ids == [eid]
    assert action.at == "2024-06-01T12:00:00Z"


_TEXT = st.text(min_size=1, max_size=40)
_BOARDS = st.one_of(
    st.just("all"), st.lists(st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z"), min_size=1, max_size=5)
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["exclude", "reinstate", "erase"]),
    player=_TEXT,
    actor=_TEXT,
    reason=_TEXT,
    boards=_BOARDS,
    at=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2049, 12, 31)),
)
def test_model_and_schema_agree_on_generated_actions(
    kind: str, player: str, actor: str, reason: str, boards: Any, at: Any
) -> None:
    """Any text (control characters included) and any board list: both say yes, or both say no."""
    doc: dict[str, Any] = {
        "kind": kind,
        "action_id": str(uuid.uuid4()),
        "actor": actor,
        "reason": reason,
        "at": at.isoformat() + "Z",
        "player_id": player,
    }
    if kind != "erase":
        doc["boards"] = boards
    raw = json.dumps(doc).encode()
    ok, why = schema_says(raw)
    result = moderation.decode(raw)
    assert ok == (not isinstance(result, moderation.Invalid)), (why, result)
