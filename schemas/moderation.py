"""The moderation v1 action as every consumer of it decodes it (msgspec: typed, strict, never raises).

``moderation.v1.json`` beside this module is the contract for other languages; tests run the corpus in
``moderation_examples/`` through both and require them to agree. Actions are operator input: unknown
fields are refused (a typo must not silently widen or narrow a ban).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

from schemas.model import _CHAR_RE, _RFC3339, _UUID, EARLIEST, LATEST, Ident, MatchId, PlayerId

MAX_TARGETS: Final = 1000
"""Most event ids or match ids one void may name (one PostgreSQL statement checks them all)."""
MAX_BOARDS: Final = 64
MAX_REASON: Final = 500
MAX_ACTOR: Final = 128
ALL: Final = "all"
"""``boards`` value: every board, present and future."""

ActionId = Annotated[str, msgspec.Meta(pattern=_UUID)]
Actor = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ACTOR, pattern=f"^{_CHAR_RE}+\\Z")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_REASON, pattern=f"^{_CHAR_RE}+\\Z")]
Instant = Annotated[str, msgspec.Meta(pattern=_RFC3339)]
Boards = Literal["all"] | Annotated[list[Ident], msgspec.Meta(min_length=1, max_length=MAX_BOARDS)]
EventIds = Annotated[list[ActionId], msgspec.Meta(min_length=1, max_length=MAX_TARGETS)]
MatchIds = Annotated[list[MatchId], msgspec.Meta(min_length=1, max_length=MAX_TARGETS)]


class Action(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="kind",
    forbid_unknown_fields=True,
    omit_defaults=True,
):
    """Fields every action has. ``at`` is RFC 3339 text, normalised to UTC ``...Z`` by :func:`decode`."""

    action_id: ActionId
    actor: Actor
    reason: Text
    at: Instant
    schema_version: Literal[1] = 1

    @property
    def kind(self) -> str:
        """The wire ``kind`` (the struct's tag)."""
        return str(self.__struct_config__.tag)

    @property
    def player(self) -> str | None:
        """The player the action is about, if it names one (the Kafka key, the audit index)."""
        return None


class Exclude(Action, frozen=True, tag="exclude"):
    """Hold a player off some boards (or all) until reinstated; their events keep being stored."""

    player_id: PlayerId
    boards: Boards

    @property
    def player(self) -> str | None:
        return self.player_id


# Same fields as Exclude on purpose: reinstate names what exclude named; each kind is its own tagged struct.
class Reinstate(Action, frozen=True, tag="reinstate"):
    """End a hold on the boards named (``all``: every hold of the player)."""

    player_id: PlayerId
    boards: Boards

    @property
    def player(self) -> str | None:
        return self.player_id


class Void(Action, frozen=True, tag="void"):
    """Take events off every board: by event id, by match id, or a player's events in [from, until)."""

    event_ids: EventIds | None = None
    match_ids: MatchIds | None = None
    player_id: PlayerId | None = None
    from_: Instant | None = msgspec.field(default=None, name="from")
    until: Instant | None = None

    @property
    def player(self) -> str | None:
        return self.player_id


class Unvoid(Action, frozen=True, tag="unvoid"):
    """Reverse the void whose action id is ``target``."""

    target: ActionId


class Erase(Action, frozen=True, tag="erase"):
    """Right to erasure: the player id becomes a pseudonym whose mapping is destroyed."""

    player_id: PlayerId

    @property
    def player(self) -> str | None:
        return self.player_id


AnyAction = Exclude | Reinstate | Void | Unvoid | Erase
KINDS: Final = ("exclude", "reinstate", "void", "unvoid", "erase")


class Invalid(msgspec.Struct, frozen=True):
    """Why a document is not an action: one readable line (the CLI prints it, the API's 400/422 says it)."""

    detail: str


_decoder: Final = msgspec.json.Decoder(AnyAction)
_encoder: Final = msgspec.json.Encoder()


def instant(text: str) -> datetime:
    """An RFC 3339 text the grammar accepted, as an aware UTC datetime (ValueError: no such day)."""
    parsed = datetime.fromisoformat(text.upper())
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def utc_text(moment: datetime) -> str:
    """The canonical form: UTC, microseconds only when there are some, ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _normal(text: str, where: str) -> str:
    try:
        moment = instant(text)
    except ValueError as exc:
        raise _Bad(f"{where}: {exc}") from None
    if not EARLIEST <= moment < LATEST:
        raise _Bad(f"{where} {text} is outside [2020-01-01, 2050-01-01) UTC")
    return utc_text(moment)


def _unique(items: list[str], where: str) -> list[str]:
    """Exact repeats are refused (as JSON Schema's uniqueItems); then ids are kept once each, in order."""
    if len(set(items)) != len(items):
        raise _Bad(f"{where}: items must be unique")
    return list(dict.fromkeys(items))


def _checked(action: AnyAction) -> AnyAction:
    """The rules no struct constraint expresses; returns the action normalised (ids lower-case, UTC)."""
    changes: dict[str, object] = {"action_id": action.action_id.lower(), "at": _normal(action.at, "at")}
    if isinstance(action, Exclude | Reinstate) and action.boards != ALL:
        changes["boards"] = _unique(list(action.boards), "boards")
    if isinstance(action, Unvoid):
        changes["target"] = action.target.lower()
    if isinstance(action, Void):
        chosen = [
            name
            for name, present in (
                ("event_ids", action.event_ids is not None),
                ("match_ids", action.match_ids is not None),
                ("player_id", action.player_id is not None),
            )
            if present
        ]
        if len(chosen) != 1:
            raise _Bad("void: give exactly one of event_ids, match_ids or player_id (with from and until)")
        window = (action.from_, action.until)
        if action.player_id is None:
            if window != (None, None):
                raise _Bad("void: from and until go with player_id only")
        else:
            if action.from_ is None or action.until is None:
                raise _Bad("void: player_id needs both from and until")
            start, end = _normal(action.from_, "from"), _normal(action.until, "until")
            if not instant(start) < instant(end):
                raise _Bad(f"void: from ({start}) must be before until ({end})")
            changes["from_"], changes["until"] = start, end
        if action.event_ids is not None:
            changes["event_ids"] = list(
                dict.fromkeys(e.lower() for e in _unique(action.event_ids, "event_ids"))
            )
        if action.match_ids is not None:
            changes["match_ids"] = _unique(action.match_ids, "match_ids")
    return msgspec.structs.replace(action, **changes)


class _Bad(Exception):
    pass


def decode(raw: bytes) -> AnyAction | Invalid:
    """Decode and validate one action document; never raises, whatever the bytes."""
    try:
        action = _decoder.decode(raw)
        return _checked(action)
    except (msgspec.MsgspecError, _Bad) as exc:
        return Invalid(str(exc))
    except Exception as exc:  # a decoder failure no check foresaw: still an answer, never a crash
        return Invalid(f"{type(exc).__name__}: {exc}")


def validate(payload: object) -> AnyAction:
    """Validate a Python value (the CLI's and the API's input); raises ValueError with the reason."""
    try:
        raw = msgspec.json.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(str(exc)) from None
    result = decode(raw)
    if isinstance(result, Invalid):
        raise ValueError(result.detail)
    return result


def player_id(text: str) -> str:
    """``text`` if it is a valid player id (1-64 characters, no control characters); else ValueError."""
    try:
        return msgspec.convert(text, PlayerId)
    except msgspec.ValidationError as exc:
        raise ValueError(f"player id: {exc}") from None


def encode(action: AnyAction) -> bytes:
    """The wire form (what is published on moderation.v1 and kept as the audit record)."""
    return _encoder.encode(action)


def to_builtins(action: AnyAction) -> dict[str, object]:
    """The wire form as a dict (JSON responses, the audit row's jsonb)."""
    out: dict[str, object] = msgspec.to_builtins(action)
    return out
