"""Which boards a running process works with, kept current: the boards file overlaid by the catalog.

A poll is one primary-key read of ``board_catalog.version`` (the caller's connection bounds it with a
statement timeout); only when it moved are the definitions read again. Consumers and API processes poll
every second, so a change reaches them within a couple of seconds without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import psycopg

from leaderboard import catalog, catalog_store
from leaderboard.boards import Board
from leaderboard.catalog import Served

POLL_S: Final = 1.0
"""How often running processes look at the catalog's version."""


class Watch:
    def __init__(self, file_boards: Sequence[Board]) -> None:
        self.file = tuple(file_boards)
        self.seen = -1
        self.current = catalog.effective(self.file, catalog.EMPTY)

    def poll(self, conn: psycopg.Connection, *, force: bool = False) -> Served | None:
        """The boards now, if the catalog changed since the last poll (or ``force``); None otherwise."""
        ver = catalog_store.version(conn)
        if ver == self.seen and not force:
            return None
        cat = catalog_store.load(conn)
        self.seen = cat.version
        fresh = catalog.effective(self.file, cat)
        if fresh == self.current and not force:
            return None
        self.current = fresh
        return fresh
