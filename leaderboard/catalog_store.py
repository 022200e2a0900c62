"""Boards managed at runtime, in PostgreSQL: versioned definitions, their states, the catalog's version.

Every write runs in one transaction under one advisory lock and raises ``board_catalog.version``, which
running processes poll (:func:`version`, one primary-key read under a statement timeout) to reload.
A refused definition (BoardsError, naming the field) is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import psycopg
from psycopg.types.json import Jsonb

from leaderboard import boards as boards_mod
from leaderboard import catalog, timefmt
from leaderboard.boards import Board
from leaderboard.catalog import Catalog, Change, Entry, Served
from leaderboard.errors import UserError
from leaderboard.settings import Settings

LOCK: Final = 0x1EAD_B0A  # advisory lock: one catalog write at a time
STATEMENT_TIMEOUT_MS: Final = 5_000
"""Bound of each catalog statement (all are keyed reads or writes of a few rows)."""


class CatalogError(UserError):
    """An operation the board's state does not allow (activate without a draft, unknown board, ...)."""


class UnknownBoard(CatalogError):
    """No board of that id in the catalog (or the boards file)."""


def _bound(conn: psycopg.Connection) -> None:
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


def version(conn: psycopg.Connection) -> int:
    """The catalog's version: rises with every change (0 before any)."""
    row = conn.execute("SELECT version FROM board_catalog").fetchone()
    return 0 if row is None else int(row[0])


def load(conn: psycopg.Connection) -> Catalog:
    """Every runtime-managed board with its live and draft definitions, in one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return load_in(conn)


def history(conn: psycopg.Connection, board: str) -> list[tuple[int, dict[str, object], str]]:
    """(version, definition, created_at text) of every stored version of a board, oldest first."""
    rows = conn.execute(
        "SELECT version, definition, created_at FROM board_definitions WHERE board = %s ORDER BY version",
        (board,),
    ).fetchall()
    return [(int(v), dict(d), timefmt.utc(c)) for v, d, c in rows]


def _locked(conn: psycopg.Connection) -> None:
    _bound(conn)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))


def _bump(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE board_catalog SET version = version + 1")


def apply(conn: psycopg.Connection, wanted: Sequence[Board], *, dry_run: bool = False) -> list[Change]:
    """Store each changed or new definition as the board's next version, a draft; unchanged ones are left.

    ``dry_run`` (``plan``): the same decisions, nothing written. All or nothing: one transaction."""
    with conn.transaction():
        _locked(conn)
        changes = catalog.plan(load_in(conn), wanted)
        if dry_run:
            return changes
        for ch in changes:
            if ch.action == "unchanged":
                continue
            row = conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM board_definitions WHERE board = %s", (ch.board,)
            ).fetchone()
            nxt = int(row[0]) if row else 1
            conn.execute(
                "INSERT INTO board_definitions (board, version, definition) VALUES (%s, %s, %s)",
                (ch.board, nxt, Jsonb(catalog.definition(ch.new))),
            )
            conn.execute(
                "INSERT INTO board_states (board, state, draft_version) VALUES (%s, 'draft', %s)"
                " ON CONFLICT (board) DO UPDATE SET draft_version = EXCLUDED.draft_version,"
                " draft_generation = NULL, updated_at = now()",
                (ch.board, nxt),
            )
        if any(ch.action != "unchanged" for ch in changes):
            _bump(conn)
    return changes


def load_in(conn: psycopg.Connection) -> Catalog:
    """:func:`load` inside the caller's transaction (no snapshot of its own)."""
    rows = conn.execute(
        "SELECT s.board, s.state, s.live_version, l.definition, s.draft_version, d.definition,"
        " s.draft_generation FROM board_states s"
        " LEFT JOIN board_definitions l ON l.board = s.board AND l.version = s.live_version"
        " LEFT JOIN board_definitions d ON d.board = s.board AND d.version = s.draft_version"
    ).fetchall()
    entries = {
        board: Entry(
            board,
            state,
            None if lv is None else catalog.versioned(ld, lv),
            None if dv is None else catalog.versioned(dd, dv),
            dg,
        )
        for board, state, lv, ld, dv, dd, dg in rows
    }
    return Catalog(version(conn), entries)


def entry(conn: psycopg.Connection, board: str) -> Entry:
    """The board's catalog entry; CatalogError naming the known boards if there is none."""
    found = load(conn).entries.get(board)
    if found is None:
        known = ", ".join(sorted(load(conn).entries)) or "none"
        raise UnknownBoard(f"no runtime-managed board {board!r}; boards in the catalog: {known}")
    return found


def set_draft_generation(conn: psycopg.Connection, board: str, draft_version: int, gen: int) -> None:
    """Record where the draft was built (only if the draft is still that version)."""
    with conn.transaction():
        _locked(conn)
        cur = conn.execute(
            "UPDATE board_states SET draft_generation = %s, updated_at = now()"
            " WHERE board = %s AND draft_version = %s",
            (gen, board, draft_version),
        )
        if cur.rowcount != 1:
            raise CatalogError(f"board {board!r}: draft version {draft_version} was replaced meanwhile")
        _bump(conn)


def activate(conn: psycopg.Connection, board: str, draft_version: int) -> None:
    """Make the draft the live version (state active); the caller has switched Redis first."""
    with conn.transaction():
        _locked(conn)
        cur = conn.execute(
            "UPDATE board_states SET state = 'active', live_version = draft_version, draft_version = NULL,"
            " draft_generation = NULL, updated_at = now() WHERE board = %s AND draft_version = %s",
            (board, draft_version),
        )
        if cur.rowcount != 1:
            raise CatalogError(f"board {board!r}: draft version {draft_version} was replaced meanwhile")
        _bump(conn)


def retire(conn: psycopg.Connection, board: str) -> bool:
    """Stop feeding the board (its periods stay readable); False if it was retired already."""
    with conn.transaction():
        _locked(conn)
        row = conn.execute("SELECT state FROM board_states WHERE board = %s FOR UPDATE", (board,)).fetchone()
        if row is None:
            raise UnknownBoard(f"no runtime-managed board {board!r}")
        if row[0] == "retired":
            return False
        conn.execute(
            "UPDATE board_states SET state = 'retired', draft_version = NULL, draft_generation = NULL,"
            " updated_at = now() WHERE board = %s",
            (board,),
        )
        _bump(conn)
    return True


def current(config: Settings) -> Served:
    """The boards the operator's commands work on now: the boards file overlaid by the catalog (the file's
    boards alone where the catalog's tables do not exist yet: a schema not migrated to 0015)."""
    file_boards = boards_mod.load(config.boards_file)
    with psycopg.connect(config.database_url, autocommit=True, connect_timeout=5) as conn:
        _bound(conn)
        try:
            return catalog.effective(file_boards, load(conn))
        except psycopg.errors.UndefinedTable:
            return catalog.effective(file_boards, catalog.EMPTY)
