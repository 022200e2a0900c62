"""Board configuration: which events feed a board, its periods, timezone and aggregation.

Loaded once from ``LEADERBOARD_BOARDS_FILE`` (TOML); with no file, one board ``global`` fed by every event.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from leaderboard import periods, scoring
from leaderboard.periods import PeriodKind

Aggregation = Literal["sum", "best"]
_BOARD_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ALL_KINDS = tuple(PeriodKind)


class BoardsError(ValueError):
    """The boards file is unreadable or inconsistent; the message names the file and the problem."""


@dataclass(frozen=True)
class Board:
    id: str
    periods: tuple[PeriodKind, ...] = _ALL_KINDS
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    aggregation: Aggregation = "sum"
    games: frozenset[str] | None = None
    modes: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    grace_seconds: int = 3600
    """Late events are still accepted this long after a period's end; then it may be closed."""
    retention_days: int = 35
    """Closed periods stay in Redis this long; afterwards the API serves them from PostgreSQL snapshots."""
    reward_top: int = 100
    """How many places the period-closed event carries."""

    def accepts(self, game: str, mode: str | None, region: str | None) -> bool:
        return (
            (self.games is None or game in self.games)
            and (self.modes is None or mode in self.modes)
            and (self.regions is None or region in self.regions)
        )

    def period_keys(self, instant: datetime) -> list[str]:
        return [periods.key_for(kind, instant, self.timezone) for kind in self.periods]

    def origin(self, period_key: str) -> tuple[datetime, int]:
        """(origin, unit seconds) of the tie-break time field for a period key."""
        span = periods.bounds(period_key, self.timezone)
        if span is None:
            return scoring.ALL_TIME_ORIGIN, scoring.ALL_TIME_UNIT_S
        return span[0], 1


DEFAULT_BOARDS: tuple[Board, ...] = (Board(id="global"),)


def _names(raw: object, what: str, board_id: str) -> frozenset[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw) or not raw:
        raise BoardsError(
            f"board {board_id!r}: filter.{what} must be a string or a non-empty list of strings"
        )
    return frozenset(raw)


def _board(raw: dict[str, object]) -> Board:
    board_id = raw.get("id")
    if not isinstance(board_id, str) or not _BOARD_ID.match(board_id):
        raise BoardsError(f"board id {board_id!r} must match {_BOARD_ID.pattern}")
    kinds_raw = raw.get("periods", [k.value for k in _ALL_KINDS])
    if not isinstance(kinds_raw, list) or not kinds_raw:
        raise BoardsError(f"board {board_id!r}: periods must be a non-empty list")
    try:
        kinds = tuple(PeriodKind(k) for k in kinds_raw)
    except (ValueError, TypeError):
        allowed = ", ".join(k.value for k in _ALL_KINDS)
        raise BoardsError(f"board {board_id!r}: periods must be some of {allowed}") from None
    zone = raw.get("timezone", "UTC")
    bad_zone = BoardsError(f"board {board_id!r}: timezone {zone!r} is no IANA zone, e.g. Europe/Berlin")
    if not isinstance(zone, str):
        raise bad_zone
    try:
        tz = ZoneInfo(zone)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        # OSError: names like 'Europe' are directories of the zone database, not zones.
        raise bad_zone from None
    aggregation = raw.get("aggregation", "sum")
    if aggregation not in ("sum", "best"):
        raise BoardsError(f"board {board_id!r}: aggregation must be 'sum' or 'best', not {aggregation!r}")
    if raw.get("order", "desc") != "desc":
        raise BoardsError(f"board {board_id!r}: only order = 'desc' is supported")
    flt = raw.get("filter", {})
    if not isinstance(flt, dict):
        raise BoardsError(f"board {board_id!r}: filter must be a table")
    ints: dict[str, int] = {}
    for name, default in (("grace_seconds", 3600), ("retention_days", 35), ("reward_top", 100)):
        value = raw.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BoardsError(f"board {board_id!r}: {name} must be a non-negative integer")
        ints[name] = value
    return Board(
        id=board_id,
        periods=kinds,
        timezone=tz,
        aggregation="sum" if aggregation == "sum" else "best",
        games=_names(flt.get("game"), "game", board_id),
        modes=_names(flt.get("mode"), "mode", board_id),
        regions=_names(flt.get("region"), "region", board_id),
        **ints,
    )


def load(path: Path | None) -> tuple[Board, ...]:
    """Boards from a TOML file with ``[[board]]`` tables, or the default board."""
    if path is None:
        return DEFAULT_BOARDS
    where = f"boards file {path} (LEADERBOARD_BOARDS_FILE)"
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BoardsError(f"{where}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise BoardsError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardsError(f"{where}: invalid TOML: {exc}") from None
    raw_boards = data.get("board")
    if not isinstance(raw_boards, list) or not raw_boards or not all(isinstance(b, dict) for b in raw_boards):
        raise BoardsError(f"{where}: expected one or more [[board]] tables")
    try:
        boards = tuple(_board(b) for b in raw_boards)
    except BoardsError as exc:
        raise BoardsError(f"{where}: {exc}") from None
    ids = [b.id for b in boards]
    if len(set(ids)) != len(ids):
        raise BoardsError(f"{where}: duplicate board ids in {ids}")
    return boards
