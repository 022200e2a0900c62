"""Boards managed at runtime, the pure part: definitions as data, plans, the boards a process serves, diffs.

A stored definition is the canonical mapping of a Board (:func:`definition`), so the same checks
(``boards.parse``) decide a TOML table, an HTTP body and a stored row, and two definitions are equal when
their mappings are. I/O lives in leaderboard.catalog_store (PostgreSQL) and consumers.board_drafts (Redis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from leaderboard import boards as boards_mod
from leaderboard import timefmt
from leaderboard.boards import Board, BoardsError

State = Literal["draft", "active", "retired"]
_NOT_FIELDS = frozenset({"seasons", "games", "modes", "regions", "version"})
"""Board attributes a definition spells differently (season, filter) or that are not part of it (version)."""
FIELDS = frozenset(f.name for f in dataclasses.fields(Board)) - _NOT_FIELDS | {"season", "filter"}
"""The keys a definition may have; any other is refused (a typo must not be ignored)."""
FILTER_FIELDS = ("game", "mode", "region")


def _check_keys(raw: Mapping[str, object]) -> None:
    board_id = raw.get("id")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise BoardsError(
            f"board {board_id!r}: unknown field {unknown[0]!r}; fields: {', '.join(sorted(FIELDS))}"
        )
    flt = raw.get("filter")
    if isinstance(flt, Mapping):
        bad = sorted(set(flt) - set(FILTER_FIELDS))
        if bad:
            raise BoardsError(
                f"board {board_id!r}: unknown field 'filter.{bad[0]}'; filter has game, mode, region"
            )
    seasons = raw.get("season")
    for season in seasons if isinstance(seasons, list) else []:
        if isinstance(season, Mapping):
            bad = sorted(set(season) - {"id", "start", "end"})
            if bad:
                raise BoardsError(
                    f"board {board_id!r}: unknown field 'season.{bad[0]}'; a season has id, start, end"
                )


def parse(raw: Mapping[str, object]) -> Board:
    """One definition checked into a Board; BoardsError names the field at fault."""
    if not isinstance(raw, Mapping):
        raise BoardsError("a board definition must be a table / JSON object")
    _check_keys(raw)
    return boards_mod.parse(dict(raw))


def definition(board: Board) -> dict[str, object]:
    """The canonical mapping of a board (JSON-able; ``parse(definition(b))`` equals ``b``)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(Board):
        if f.name in _NOT_FIELDS:
            continue
        value = getattr(board, f.name)
        if f.name == "periods":
            value = [str(k) for k in value]
        elif f.name == "timezone":
            value = value.key
        out[f.name] = value
    if board.seasons:
        out["season"] = [{"id": s.id, "start": _iso(s.start), "end": _iso(s.end)} for s in board.seasons]
    flt = {
        name: sorted(chosen)
        for name, chosen in zip(FILTER_FIELDS, (board.games, board.modes, board.regions), strict=True)
        if chosen is not None
    }
    if flt:
        out["filter"] = flt
    return out


def _iso(instant: datetime) -> str:
    return timefmt.utc(instant)


def versioned(raw: Mapping[str, object], version: int) -> Board:
    """A stored definition as the Board processes use: its version travels with it (the Redis fence)."""
    return dataclasses.replace(parse(raw), version=version)


def same(a: Board, b: Board) -> bool:
    """Whether two boards have the same definition (versions aside)."""
    return definition(a) == definition(b)


@dataclass(frozen=True)
class Entry:
    """One runtime-managed board: its state, its live version and the draft waiting to go live."""

    board: str
    state: State
    live: Board | None
    draft: Board | None
    draft_generation: int | None = None


@dataclass(frozen=True)
class Catalog:
    version: int
    entries: Mapping[str, Entry]


EMPTY = Catalog(0, {})


@dataclass(frozen=True)
class Served:
    """What a process works with: ``fed`` the boards events go to; ``served`` those the API answers for
    (the fed ones and the retired ones, whose periods stay readable)."""

    fed: tuple[Board, ...]
    served: tuple[Board, ...]


def effective(file_boards: Sequence[Board], catalog: Catalog) -> Served:
    """The boards file, overlaid by the catalog: a stored board replaces the file's board of the same id
    once it has a live version; a retired one is no longer fed; a draft is neither fed nor served."""
    fed: list[Board] = []
    served: list[Board] = []
    for b in file_boards:
        if b.id not in catalog.entries:
            fed.append(b)
            served.append(b)
    for board_id in sorted(catalog.entries):
        e = catalog.entries[board_id]
        if e.live is None:
            continue
        if e.state == "active":
            fed.append(e.live)
        served.append(e.live)
    return Served(tuple(fed), tuple(served))


Action = Literal["create", "change", "unchanged"]


@dataclass(frozen=True)
class Change:
    board: str
    action: Action
    fields: tuple[str, ...]
    """The definition's fields that differ from the latest stored version (all of them for a create)."""
    new: Board

    def line(self) -> str:
        if self.action == "unchanged":
            return f"= {self.board}: unchanged"
        if self.action == "create":
            return f"+ {self.board}: new board (draft version 1)"
        if not self.fields:
            return f"~ {self.board}: new draft version (the retired board comes back)"
        return f"~ {self.board}: new draft version ({', '.join(self.fields)} changed)"


def latest(entry: Entry) -> Board | None:
    """The newest stored definition of a board: its draft if it has one, else its live version."""
    return entry.draft if entry.draft is not None else entry.live


def plan(catalog: Catalog, wanted: Iterable[Board]) -> list[Change]:
    """What ``apply`` would do with these definitions: each one is new, changed against the board's latest
    stored version (then it becomes a new draft version), or unchanged (nothing is written)."""
    out: list[Change] = []
    for new in wanted:
        entry = catalog.entries.get(new.id)
        old = None if entry is None else latest(entry)
        if old is None:
            out.append(Change(new.id, "create", tuple(sorted(definition(new))), new))
            continue
        a, b = definition(old), definition(new)
        changed = tuple(sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)))
        # A retired board comes back through a new draft (built from the whole log), changed or not.
        back = entry is not None and entry.state == "retired" and entry.draft is None
        out.append(Change(new.id, "change" if changed or back else "unchanged", changed, new))
    return out


def parse_file(data: Mapping[str, object], where: str) -> list[Board]:
    """The ``[[board]]`` tables of a boards file (TOML as data), each checked; BoardsError names the place."""
    out: list[Board] = []
    for i, table in enumerate(boards_mod.board_tables(data, where)):
        try:
            out.append(parse(table))
        except BoardsError as exc:
            raise BoardsError(f"{where}: [[board]] #{i + 1}: {exc}") from None
    boards_mod.check_unique_ids(out, where)
    return out


# -- diff ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    player: str
    before: int | None
    """Rank on the live version (None: not on it)."""
    after: int | None
    """Rank on the draft (None: not on it)."""


@dataclass(frozen=True)
class Diff:
    top: int
    entering: tuple[str, ...]
    """Players in the draft's top ``top`` who are not in the live version's."""
    leaving: tuple[str, ...]
    moves: tuple[Move, ...]
    """Every player whose rank differs (appearing, disappearing or moving), best new rank first."""
    players_before: int
    players_after: int


def ranks(rows: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Competition ranks ("1224") of (player, value) rows given in board order (ties adjacent)."""
    out: dict[str, int] = {}
    prev: int | None = None
    rank = 0
    for i, (player, value) in enumerate(rows):
        if i == 0 or value != prev:
            rank = i + 1
        out[player] = rank
        prev = value
    return out


def diff(before: Sequence[tuple[str, int]], after: Sequence[tuple[str, int]], top: int) -> Diff:
    """Compare a board's live standings with its draft's, both as (player, value) rows in board order."""
    old, new = ranks(before), ranks(after)
    old_top = {p for p, r in old.items() if r <= top}
    new_top = {p for p, r in new.items() if r <= top}
    moves = [Move(p, old.get(p), new.get(p)) for p in set(old) | set(new) if old.get(p) != new.get(p)]
    big = 1 << 62
    moves.sort(
        key=lambda m: (big if m.after is None else m.after, big if m.before is None else m.before, m.player)
    )
    return Diff(
        top=top,
        entering=tuple(sorted(new_top - old_top, key=lambda p: (new[p], p))),
        leaving=tuple(sorted(old_top - new_top, key=lambda p: (old[p], p))),
        moves=tuple(moves),
        players_before=len(old),
        players_after=len(new),
    )
