"""The operations on runtime-managed boards, shared by ``leaderboard boards`` and ``/v1/admin/boards``.

list, show, plan (a dry run of apply), apply (store each changed definition as a new draft version and
build it), diff, activate, retire. Each opens its own bounded connections and closes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from consumers.board_drafts import Built, Drafts
from leaderboard import boards as boards_mod
from leaderboard import catalog, catalog_store, periods
from leaderboard.boards import Board
from leaderboard.catalog import Change, Diff
from leaderboard.catalog_store import CatalogError, UnknownBoard
from leaderboard.keys import Keys
from leaderboard.redis_client import sync_client
from leaderboard.settings import Settings

STATEMENT_TIMEOUT_MS = 120_000
"""Bound of each statement of a draft build or activation (reads of 20,000 events, a checkpoint step)."""
DEFAULT_TOP = 10


def read_file(path: Path) -> list[Board]:
    """The ``[[board]]`` definitions of a TOML file, each checked (BoardsError names file and field)."""
    where = f"boards file {path}"
    return catalog.parse_file(boards_mod.read_toml(path, where), where)


@dataclass
class Applied:
    change: Change
    built: Built | None


class Ops:
    def __init__(self, config: Settings) -> None:
        self.config = config
        self.file_boards = boards_mod.load(config.boards_file)

    @contextlib.contextmanager
    def _pg(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.config.database_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            yield conn

    @contextlib.contextmanager
    def _drafts(self) -> Iterator[Drafts]:
        client = sync_client(self.config, socket_timeout=30)
        try:
            yield Drafts(client, Keys(self.config.redis_prefix))
        finally:
            client.close()

    def boards(self) -> list[dict[str, Any]]:
        with self._pg() as conn:
            cat = catalog_store.load(conn)
        out: list[dict[str, Any]] = [
            {"id": b.id, "state": "active", "source": "file", "live_version": None, "draft_version": None}
            for b in self.file_boards
            if b.id not in cat.entries
        ]
        for board_id in sorted(cat.entries):
            e = cat.entries[board_id]
            out.append(_summary(board_id, e))
        return out

    def show(self, board_id: str) -> dict[str, Any]:
        with self._pg() as conn:
            cat = catalog_store.load(conn)
            e = cat.entries.get(board_id)
            if e is None:
                file_board = next((b for b in self.file_boards if b.id == board_id), None)
                if file_board is None:
                    raise UnknownBoard(f"no board {board_id!r}; see `leaderboard boards list`")
                return {
                    "id": board_id,
                    "state": "active",
                    "source": "file",
                    "definition": catalog.definition(file_board),
                }
            versions = catalog_store.history(conn, board_id)
        return {
            **_summary(board_id, e),
            "versions": [{"version": v, "definition": d, "created_at": c} for v, d, c in versions],
        }

    def plan(self, wanted: list[Board]) -> list[Change]:
        with self._pg() as conn:
            return catalog_store.apply(conn, wanted, dry_run=True)

    def apply(
        self, wanted: list[Board], progress: Callable[[str], None] = lambda line: None
    ) -> list[Applied]:
        """Store the changed definitions (all or nothing), then build each new draft from the event log."""
        with self._pg() as conn:
            changes = catalog_store.apply(conn, wanted)
            out: list[Applied] = []
            cat = catalog_store.load(conn)
            with self._drafts() as drafts:
                for ch in changes:
                    entry = cat.entries.get(ch.board)
                    draft = None if entry is None else entry.draft
                    unbuilt = entry is not None and draft is not None and entry.draft_generation is None
                    # An unchanged definition is built if it is a draft whose build failed before.
                    if draft is None or (
                        ch.action == "unchanged" and not (unbuilt and catalog.same(draft, ch.new))
                    ):
                        out.append(Applied(ch, None))
                        continue
                    lease = drafts.lease(ch.board)
                    try:
                        built = drafts.build(conn, draft, lease)
                    finally:
                        lease.release()
                    progress(
                        f"{ch.line()}; built from {built.events:,} events in {built.seconds:.1f} s"
                        f" (generation {built.generation})"
                    )
                    out.append(Applied(ch, built))
        return out

    def _live(self, cat: catalog.Catalog, board_id: str) -> Board | None:
        e = cat.entries.get(board_id)
        if e is not None and e.live is not None:
            return e.live
        return next((b for b in self.file_boards if b.id == board_id), None)

    def diff(self, board_id: str, period: str | None, top: int = DEFAULT_TOP) -> tuple[str, Diff]:
        """The draft against the live version on one period (default: all_time, or the draft's first)."""
        if top < 1:
            raise CatalogError(f"--top must be at least 1, not {top}")
        with self._pg() as conn:
            cat = catalog_store.load(conn)
        e = cat.entries.get(board_id)
        if e is None:
            raise UnknownBoard(f"no runtime-managed board {board_id!r}; see `leaderboard boards list`")
        if e.draft is None:
            raise CatalogError(f"board {board_id!r} has no draft; `leaderboard boards apply FILE` makes one")
        spec = period or (
            periods.ALL_TIME
            if periods.PeriodKind.ALL_TIME in e.draft.periods
            else f"{e.draft.periods[0]}:current"
        )
        from datetime import UTC, datetime  # noqa: PLC0415

        try:
            key = e.draft.resolve(spec, datetime.now(UTC))
        except periods.PeriodError as exc:
            raise CatalogError(f"invalid period {spec!r}: {exc}") from None
        with self._pg() as conn, self._drafts() as drafts:
            if e.draft_generation is not None:
                # The draft is fed by nobody: bring it to the log's end first, so both sides compare alike.
                lease = drafts.lease(board_id)
                try:
                    drafts.catch_up(conn, e.draft, e.draft_generation, lease)
                finally:
                    lease.release()
            return key, drafts.diff(self._live(cat, board_id), e, key, top)

    def activate(self, board_id: str) -> str:
        with self._pg() as conn:
            e = catalog_store.entry(conn, board_id)
            with self._drafts() as drafts:
                lease = drafts.lease(board_id)
                try:
                    return drafts.activate(conn, e, lease)
                finally:
                    lease.release()

    def retire(self, board_id: str) -> bool:
        with self._pg() as conn:
            changed = catalog_store.retire(conn, board_id)
        with self._drafts() as drafts:
            drafts.fence_retired(board_id)
        return changed


def _summary(board_id: str, e: catalog.Entry) -> dict[str, Any]:
    """A stored board's line in ``list`` and the head of ``show``."""
    return {
        "id": board_id,
        "state": e.state,
        "source": "catalog",
        "live_version": None if e.live is None else e.live.version,
        "draft_version": None if e.draft is None else e.draft.version,
        "draft_built": e.draft_generation is not None,
    }


def diff_doc(period: str, d: Diff) -> dict[str, Any]:
    return {
        "period": period,
        "top": d.top,
        "players_before": d.players_before,
        "players_after": d.players_after,
        "entering_top": list(d.entering),
        "leaving_top": list(d.leaving),
        "moves": [{"player_id": m.player, "before": m.before, "after": m.after} for m in d.moves],
    }


def change_doc(ch: Change) -> dict[str, Any]:
    return {
        "board": ch.board,
        "action": ch.action,
        "fields": list(ch.fields),
        "definition": catalog.definition(ch.new),
    }


def definitions_of(doc: Mapping[str, object], where: str) -> list[Board]:
    """Definitions from a JSON document shaped like a boards file: ``{"board": [{...}, ...]}``."""
    return catalog.parse_file(doc, where)
