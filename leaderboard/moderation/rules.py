"""What an action changes in the moderation state, or why it is refused: pure, no I/O.

The store reads the few rows an action can touch (a :class:`State`), asks :func:`plan`, and applies the
:class:`Plan` in the same transaction, so an action is applied whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas import moderation as m

EVERY_BOARD = "*"
"""The exclusion row's board for ``boards: "all"``: every board, present and future."""


class Refused(Exception):
    """An action that cannot apply as asked; ``code`` decides the HTTP status, ``detail`` is one line."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


UNKNOWN = ("unknown-player", "unknown-board", "unknown-event", "unknown-match", "unknown-action")
"""Codes for references to what does not exist (422); every other code is a conflict with the state (409)."""


@dataclass(frozen=True, slots=True)
class Window:
    action_id: str
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class State:
    """The rows an action is checked against (the store reads only what the action names)."""

    player_known: bool = False
    excluded: frozenset[str] = frozenset()
    """Boards the player is held off now (EVERY_BOARD included)."""
    windows: tuple[Window, ...] = ()
    """The player's active void windows."""
    known_events: frozenset[str] = frozenset()
    known_matches: frozenset[str] = frozenset()
    target_kind: str | None = None
    target_unvoided: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """State changes of one action (applied together, in one transaction)."""

    exclude: tuple[str, ...] = ()
    """Boards to hold the player off (EVERY_BOARD: all)."""
    reinstate: tuple[str, ...] = ()
    """Boards whose hold ends (EVERY_BOARD: every hold of the player)."""
    void_events: tuple[str, ...] = ()
    void_matches: tuple[str, ...] = ()
    void_window: tuple[datetime, datetime] | None = None
    unvoid: str | None = None
    erase: bool = False


def _names(boards: m.Boards) -> tuple[str, ...]:
    return (EVERY_BOARD,) if boards == m.ALL else tuple(boards)


def _need_player(action: m.AnyAction, state: State) -> None:
    if not state.player_known:
        raise Refused("unknown-player", f"no events or profile of player {action.player!r}")


def plan(action: m.AnyAction, state: State, boards: frozenset[str]) -> Plan:
    """The changes ``action`` makes given ``state`` and the configured ``boards``; raises Refused."""
    if isinstance(action, m.Exclude):
        _need_player(action, state)
        wanted = _names(action.boards)
        unknown = [b for b in wanted if b != EVERY_BOARD and b not in boards]
        if unknown:
            raise Refused("unknown-board", f"no such board: {', '.join(unknown)}")
        if EVERY_BOARD in state.excluded:
            raise Refused("already-excluded", "the player is already excluded from all boards")
        if wanted == (EVERY_BOARD,):
            return Plan(reinstate=(EVERY_BOARD,), exclude=(EVERY_BOARD,))  # narrower holds merge into one
        new = tuple(b for b in wanted if b not in state.excluded)
        if not new:
            raise Refused("already-excluded", f"the player is already excluded from {', '.join(wanted)}")
        return Plan(exclude=new)
    if isinstance(action, m.Reinstate):
        if not state.excluded:
            raise Refused("not-excluded", "the player is not excluded from any board")
        wanted = _names(action.boards)
        if wanted == (EVERY_BOARD,):
            return Plan(reinstate=(EVERY_BOARD,))
        if EVERY_BOARD in state.excluded:
            raise Refused(
                "not-excluded", "the player is excluded from all boards: reinstate all (no --board) first"
            )
        missing = [b for b in wanted if b not in state.excluded]
        if missing:
            raise Refused("not-excluded", f"the player is not excluded from {', '.join(missing)}")
        return Plan(reinstate=wanted)
    if isinstance(action, m.Void):
        return _void(action, state)
    if isinstance(action, m.Unvoid):
        if state.target_kind is None:
            raise Refused("unknown-action", f"no moderation action {action.target}")
        if state.target_kind != "void":
            raise Refused("not-a-void", f"action {action.target} is a {state.target_kind}, not a void")
        if state.target_unvoided:
            raise Refused("already-unvoided", f"void {action.target} was already reversed")
        return Plan(unvoid=action.target)
    _need_player(action, state)
    return Plan(erase=True)


def _void(action: m.Void, state: State) -> Plan:
    if action.event_ids is not None:
        missing = [e for e in action.event_ids if e not in state.known_events]
        if missing:
            raise Refused("unknown-event", f"{len(missing)} unknown event id(s), first: {missing[0]}")
        return Plan(void_events=tuple(action.event_ids))
    if action.match_ids is not None:
        missing = [x for x in action.match_ids if x not in state.known_matches]
        if missing:
            raise Refused("unknown-match", f"{len(missing)} unknown match id(s), first: {missing[0]!r}")
        return Plan(void_matches=tuple(action.match_ids))
    assert action.from_ is not None
    assert action.until is not None
    _need_player(action, state)
    start, end = m.instant(action.from_), m.instant(action.until)
    for other in state.windows:
        if other.starts_at < end and start < other.ends_at:
            raise Refused(
                "overlapping-window",
                f"overlaps void {other.action_id}"
                f" [{m.utc_text(other.starts_at)}, {m.utc_text(other.ends_at)})",
            )
    return Plan(void_window=(start, end))


def kafka_key(action: m.AnyAction, target_key: bytes | None = None) -> bytes:
    """The record key on moderation.v1: the player the action names, so a player's actions stay in
    order on one partition; an unvoid takes its void's key (it follows the void); else the action id."""
    if isinstance(action, m.Unvoid) and target_key is not None:
        return target_key
    player = action.player
    return (player if player is not None else action.action_id).encode()


def same_action(stored: dict[str, object], given: dict[str, object]) -> bool:
    """Whether a resubmitted action (same action_id) is the stored one: its time may differ (a retry that
    let the server fill ``at`` again), nothing else may. Erasures compare without the player id, which
    the store no longer holds."""
    ignore = {"at", "player_id"} if given.get("kind") == "erase" else {"at"}
    strip = {k: v for k, v in stored.items() if k not in ignore}
    return strip == {k: v for k, v in given.items() if k not in ignore}
