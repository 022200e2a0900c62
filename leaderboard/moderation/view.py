"""What counts on a board under moderation: one pure predicate every board path calls (no I/O).

Two kinds of moderation, applied in two places:

- **Facts** (void, erase) say an event never counted: the standings checkpoint, the live apply, a Kafka
  replay and closed-period corrections all leave such events out (:meth:`View.voided`). The checkpoint's
  SQL fold uses :data:`VOIDED_SQL`, the same rule in SQL (tests/test_moderation_boards.py checks both
  against one oracle on the real PostgreSQL).
- **Holds** (exclude until reinstate) hide a player from boards while held: applied where a board is
  written to Redis (live apply, checkpoint load, tail, recompute) and where closed standings are computed
  (:meth:`View.held`, :data:`HELD_SQL`). The checkpoint keeps held players' standings, so a reinstate
  needs no log read for them.

A :class:`View` is loaded at a known action ``seq`` (``store.load_view``): every path records the seq it
reflects and recomputes the players of later actions (``store.affected_players``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import msgspec

from leaderboard.moderation.rules import EVERY_BOARD
from schemas.model import MatchWon

PSEUDONYM_PREFIX = "erased-"


class _Event(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def match_id(self) -> str: ...
    @property
    def player_id(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class View:
    """The active moderation state at action ``seq`` (small: active holds and voids, not history)."""

    seq: int = 0
    holds: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """player -> boards held off (EVERY_BOARD: all)."""
    void_events: frozenset[str] = frozenset()
    void_matches: frozenset[str] = frozenset()
    windows: Mapping[str, tuple[tuple[datetime, datetime], ...]] = field(default_factory=dict)
    """player -> active void windows [start, end), sorted by start, never overlapping."""
    erased: frozenset[str] = frozenset()
    """Pseudonyms of erased players (their stored events count nowhere)."""
    erased_digests: Mapping[bytes, str] = field(default_factory=dict)
    """Digest of an erased id still inside the erasure horizon -> its pseudonym: raw Kafka records of the
    id count nowhere, and an event of it that arrives late is stored under the pseudonym."""

    def held(self, player: str, board: str) -> bool:
        boards = self.holds.get(player)
        return boards is not None and (EVERY_BOARD in boards or board in boards)

    def held_off(self, board: str) -> list[str]:
        """Every player held off ``board`` (a rebuild or verify leaves them out of the checkpoint's rows)."""
        return sorted(p for p in self.holds if self.held(p, board))

    def voided(self, event: _Event) -> bool:
        """Whether the event's points count on no board (voided, or its player erased)."""
        if event.event_id in self.void_events or event.match_id in self.void_matches:
            return True
        player = event.player_id
        if player in self.erased:
            return True
        if self.erased_digests and digest(player) in self.erased_digests:
            return True
        spans = self.windows.get(player)
        if spans:
            i = bisect_right([s for s, _ in spans], event.occurred_at) - 1
            if i >= 0 and event.occurred_at < spans[i][1]:
                return True
        return False

    def why_not(self, event: _Event, board: str) -> str | None:
        """Why the event does not count on ``board`` (None: it counts): erased, voided-event,
        voided-match, voided-window or held; the same decision as :meth:`counts`, named."""
        player = event.player_id
        if player in self.erased or (self.erased_digests and digest(player) in self.erased_digests):
            return "erased"
        if event.event_id in self.void_events:
            return "voided-event"
        if event.match_id in self.void_matches:
            return "voided-match"
        if self.voided(event):
            return "voided-window"
        if self.held(player, board):
            return "held"
        return None

    def counts(self, event: _Event, board: str) -> bool:
        """THE predicate: the event's points count on ``board`` now."""
        return not self.held(event.player_id, board) and not self.voided(event)

    @property
    def empty(self) -> bool:
        return not (self.holds or self.void_events or self.void_matches or self.windows or self.erased)


def digest(player_id: str) -> bytes:
    """The erased id's SHA-256: recognises its records still in Kafka until the erasure horizon."""
    return hashlib.sha256(b"leaderboard-erasure-v1\x00" + player_id.encode()).digest()


def pseudonymised(v: View, event: MatchWon) -> MatchWon:
    """An event of an erased id still inside the erasure horizon (a late or replayed record), as it is
    stored: under the erasure's pseudonym, without a display name. Other events unchanged."""
    if not v.erased_digests:
        return event
    pseudonym = v.erased_digests.get(digest(event.player_id))
    if pseudonym is None:
        return event
    return msgspec.structs.replace(event, player_id=pseudonym, display_name=None)


def build(  # noqa: PLR0917 - one argument per state table
    seq: int,
    holds: Iterable[tuple[str, str]],
    void_events: Iterable[str],
    void_matches: Iterable[str],
    windows: Iterable[tuple[str, datetime, datetime]],
    erased: Iterable[str],
    digests: Iterable[tuple[bytes, str]] = (),
) -> View:
    """A view from the rows of the state tables."""
    by_player: dict[str, set[str]] = {}
    for player, board in holds:
        by_player.setdefault(player, set()).add(board)
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for player, start, end in windows:
        spans.setdefault(player, []).append((start, end))
    return View(
        seq=seq,
        holds={p: frozenset(b) for p, b in by_player.items()},
        void_events=frozenset(str(e) for e in void_events),
        void_matches=frozenset(void_matches),
        windows={p: tuple(sorted(s)) for p, s in spans.items()},
        erased=frozenset(erased),
        erased_digests=dict(digests),
    )


VOIDED_SQL = """(
    EXISTS (SELECT 1 FROM moderation_void_events v WHERE v.event_id = e.event_id)
    OR EXISTS (SELECT 1 FROM moderation_void_matches v WHERE v.match_id = e.match_id)
    OR EXISTS (SELECT 1 FROM moderation_void_windows v
               WHERE v.player_id = e.player_id AND e.occurred_at >= v.starts_at AND e.occurred_at < v.ends_at)
    OR EXISTS (SELECT 1 FROM moderation_erasures x WHERE x.pseudonym = e.player_id)
)"""
"""View.voided in SQL, over an ``events`` row aliased ``e`` (each test a keyed lookup in a small table)."""

HELD_SQL = """EXISTS (
    SELECT 1 FROM moderation_exclusions h
    WHERE h.player_id = {player} AND (h.board = {board} OR h.board = '*')
)"""
"""View.held in SQL; format with the SQL of the player and board expressions."""
