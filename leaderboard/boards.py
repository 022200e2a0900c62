"""Board configuration: which events feed a board, its periods and seasons, timezone and ranking rule.

Loaded once from ``LEADERBOARD_BOARDS_FILE`` (TOML); with no file, one board ``global`` fed by every event.
A definition is plain data (:func:`parse` turns one mapping into a Board), so definitions stored elsewhere
(boards managed at runtime) parse through the same checks.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from leaderboard import periods, scoring
from leaderboard.aggregate import AGGREGATIONS, ORDERS, VALUE_FIELDS, Aggregation, Order, Rule, ValueField
from leaderboard.periods import PeriodKind

_T = TypeVar("_T", bound=str)
SEASON_PREFIX = "season:"
SEASON_ALIGN_S = 900
"""Season bounds fall on quarter hours, so every 15-minute bucket of events feeds the same period keys."""
_BOARD_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_ALL_KINDS = tuple(PeriodKind)
MAX_SHARDS = 64


class BoardsError(ValueError):
    """The boards file is unreadable or inconsistent; the message names the file and the problem."""


@dataclass(frozen=True)
class Season:
    """A named period with explicit bounds [start, end), closable like the calendar ones."""

    id: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        return SEASON_PREFIX + self.id


@dataclass(frozen=True)
class Board:
    id: str
    periods: tuple[PeriodKind, ...] = _ALL_KINDS
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    aggregation: Aggregation = "sum"
    order: Order = "desc"
    """desc: higher is better; asc: lower is better (lap times, strokes)."""
    value: ValueField = "points"
    """The event field the board ranks by: points (default 1) or the optional score."""
    seasons: tuple[Season, ...] = ()
    games: frozenset[str] | None = None
    modes: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    grace_seconds: int = 3600
    """Late events are still accepted this long after a period's end; then it may be closed."""
    retention_days: int = 35
    """Closed periods stay in Redis this long; afterwards the API serves them from PostgreSQL snapshots."""
    reward_top: int = 100
    """How many places the period-closed event carries."""
    shards: int = 1
    """Sorted sets per board-period, each on its own Redis Cluster slot, a player in the one its id hashes to
    (leaderboard.shards): a board larger than one Redis node. 1: the board's keys as always."""
    version: int | None = None
    """The stored definition's version (boards managed at runtime, leaderboard.catalog); None: from the
    boards file. Redis fences writes by it, so a process with an older definition cannot write a board."""

    def accepts(self, game: str, mode: str | None, region: str | None) -> bool:
        return (
            (self.games is None or game in self.games)
            and (self.modes is None or mode in self.modes)
            and (self.regions is None or region in self.regions)
        )

    @property
    def rule(self) -> Rule:
        return Rule(self.aggregation, self.order, self.value)

    def value_of(self, points: int, score: int | None) -> int | None:
        """The value this board ranks the event by; None: the board does not count the event."""
        return self.rule.value_of(points, score)

    def period_keys(self, instant: datetime) -> list[str]:
        keys = [periods.key_for(kind, instant, self.timezone) for kind in self.periods]
        keys.extend(s.key for s in self.seasons if s.start <= instant < s.end)
        return keys

    def season(self, key: str) -> Season | None:
        if not key.startswith(SEASON_PREFIX):
            return None
        return next((s for s in self.seasons if s.key == key), None)

    def bounds(self, period_key: str) -> tuple[datetime, datetime] | None:
        """[start, end) of one of the board's period keys as UTC instants; None for all_time.

        Raises periods.PeriodError for a key that is neither a calendar period nor one of its seasons."""
        if period_key.startswith(SEASON_PREFIX):
            season = self.season(period_key)
            if season is None:
                known = ", ".join(s.key for s in self.seasons) or "none"
                raise periods.PeriodError(f"board {self.id!r} has no {period_key!r}; its seasons: {known}")
            return season.start, season.end
        return periods.bounds(period_key, self.timezone)

    def closes_at(self, period_key: str) -> datetime | None:
        """When a period may be closed: its end plus the grace window (None for all_time)."""
        span = self.bounds(period_key)
        return None if span is None else span[1] + timedelta(seconds=self.grace_seconds)

    def current_keys(self, now: datetime) -> dict[str, str]:
        """Period kind -> key of the period containing ``now``; "season" -> the current season, if any."""
        out = {str(kind): periods.key_for(kind, now, self.timezone) for kind in self.periods}
        season = next((x for x in self.seasons if x.start <= now < x.end), None)
        if season is not None:
            out["season"] = season.key
        return out

    def resolve(self, spec: str, now: datetime) -> str:
        """An API period spec as one of the board's period keys; raises periods.PeriodError.

        Seasons: ``season:<id>``, ``season:current`` (the one containing now) or ``season:previous`` (the
        latest that ended)."""
        if not spec.startswith(SEASON_PREFIX):
            return periods.resolve(spec, now, self.timezone)
        which = spec.removeprefix(SEASON_PREFIX)
        if which == "current":
            found = next((x for x in self.seasons if x.start <= now < x.end), None)
        elif which == "previous":
            ended = [x for x in self.seasons if x.end <= now]
            found = max(ended, key=lambda x: x.end) if ended else None
        else:
            found = self.season(spec)
        if found is None:
            known = ", ".join(x.key for x in self.seasons) or "none"
            raise periods.PeriodError(f"board {self.id!r} has no season {which!r}; its seasons: {known}")
        return found.key

    def origin(self, period_key: str) -> tuple[datetime, int]:
        """(origin, unit seconds) of the tie-break time field for a period key.

        Seconds from the period's start, coarser only for a season longer than 2**24 s (194 days)."""
        span = self.bounds(period_key)
        if span is None:
            return scoring.ALL_TIME_ORIGIN, scoring.ALL_TIME_UNIT_S
        length = (span[1] - span[0]).total_seconds()
        return span[0], max(1, math.ceil(length / scoring.TIME_SPAN))


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


def _choice(raw: dict[str, object], name: str, allowed: tuple[_T, ...], board_id: str) -> _T:
    got = raw.get(name, allowed[0])
    for option in allowed:
        if got == option:
            return option
    options = " or ".join(repr(a) for a in allowed)
    raise BoardsError(f"board {board_id!r}: {name} must be {options}, not {got!r}")


def _instant(raw: object, what: str) -> datetime:
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError:
            raise BoardsError(f"{what} {raw!r} is no RFC 3339 date-time") from None
    if not isinstance(raw, datetime) or raw.tzinfo is None:
        raise BoardsError(f"{what} must be a date-time with an offset, e.g. 2027-01-01T00:00:00Z")
    instant = raw.astimezone(UTC)
    if instant.timestamp() % SEASON_ALIGN_S:
        raise BoardsError(
            f"{what} must fall on a quarter hour (:00, :15, :30, :45), not {instant.isoformat()}"
        )
    return instant


def _seasons(raw: object, board_id: str) -> tuple[Season, ...]:
    """``[[board.season]]`` tables: id, start, end (TOML date-times or RFC 3339 strings)."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise BoardsError(f"board {board_id!r}: season must be [[board.season]] tables")
    out: list[Season] = []
    for table in raw:
        sid = table.get("id")
        if not isinstance(sid, str) or not _BOARD_ID.match(sid):
            raise BoardsError(f"board {board_id!r}: season id {sid!r} must match {_BOARD_ID.pattern}")
        what = f"board {board_id!r}: season {sid!r}"
        start = _instant(table.get("start"), f"{what}: start")
        end = _instant(table.get("end"), f"{what}: end")
        if not start < end:
            raise BoardsError(f"{what}: start must be before end")
        if not (start >= scoring.ALL_TIME_ORIGIN and end <= datetime(2050, 1, 1, tzinfo=UTC)):
            raise BoardsError(f"{what}: must lie within 2020-01-01 .. 2050-01-01 (the events' range)")
        out.append(Season(sid, start, end))
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise BoardsError(f"board {board_id!r}: duplicate season ids in {ids}")
    return tuple(out)


def parse(raw: dict[str, object], *, sharded: bool = False) -> Board:
    """One board definition (a ``[[board]]`` table, or the same as data) checked into a Board.

    ``shards`` > 1 only with ``sharded``: the boards file (:func:`load`) may shard a board; a board managed
    at runtime (leaderboard.catalog: drafts built from the log, then activated) may not yet, as its draft
    build and activation handle one sorted set per period only."""
    return _board(raw, sharded=sharded)


def _board(raw: dict[str, object], *, sharded: bool = False) -> Board:
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
    aggregation = _choice(raw, "aggregation", AGGREGATIONS, board_id)
    order = _choice(raw, "order", ORDERS, board_id)
    ranked_by = _choice(raw, "value", VALUE_FIELDS, board_id)
    seasons = _seasons(raw.get("season", []), board_id)
    flt = raw.get("filter", {})
    if not isinstance(flt, dict):
        raise BoardsError(f"board {board_id!r}: filter must be a table")
    ints: dict[str, int] = {}
    for name, default in (("grace_seconds", 3600), ("retention_days", 35), ("reward_top", 100)):
        value = raw.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise BoardsError(f"board {board_id!r}: {name} must be a non-negative integer")
        ints[name] = value
    shards = raw.get("shards", 1)
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
        raise BoardsError(f"board {board_id!r}: shards must be an integer from 1 to {MAX_SHARDS}")
    if shards > 1 and not sharded:
        raise BoardsError(
            f"board {board_id!r}: shards = {shards}: only a board of the boards file "
            "(LEADERBOARD_BOARDS_FILE) may be sharded so far, not one managed at runtime"
        )
    return Board(
        id=board_id,
        periods=kinds,
        timezone=tz,
        aggregation=aggregation,
        order=order,
        value=ranked_by,
        seasons=seasons,
        games=_names(flt.get("game"), "game", board_id),
        modes=_names(flt.get("mode"), "mode", board_id),
        regions=_names(flt.get("region"), "region", board_id),
        shards=shards,
        **ints,
    )


def read_toml(path: Path, where: str) -> dict[str, Any]:
    """A boards file as TOML; BoardsError (naming ``where``) when unreadable, not UTF-8 or not TOML."""
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BoardsError(f"{where}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise BoardsError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardsError(f"{where}: invalid TOML: {exc}") from None


def board_tables(data: Mapping[str, object], where: str) -> list[dict[str, object]]:
    """The ``[[board]]`` tables of a boards file (TOML as data); BoardsError (naming ``where``) when none."""
    raw = data.get("board")
    if not isinstance(raw, list) or not raw or not all(isinstance(b, dict) for b in raw):
        raise BoardsError(f"{where}: expected one or more [[board]] tables")
    return raw


def check_unique_ids(boards: Sequence[Board], where: str) -> None:
    """BoardsError (naming ``where``) when two boards of one file share an id."""
    ids = [b.id for b in boards]
    if len(set(ids)) != len(ids):
        raise BoardsError(f"{where}: duplicate board ids in {ids}")


def load(path: Path | None) -> tuple[Board, ...]:
    """Boards from a TOML file with ``[[board]]`` tables, or the default board."""
    if path is None:
        return DEFAULT_BOARDS
    where = f"boards file {path} (LEADERBOARD_BOARDS_FILE)"
    raw_boards = board_tables(read_toml(path, where), where)
    try:
        boards = tuple(_board(b, sharded=True) for b in raw_boards)
    except BoardsError as exc:
        raise BoardsError(f"{where}: {exc}") from None
    check_unique_ids(boards, where)
    return boards
