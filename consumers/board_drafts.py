"""Drafts of runtime-managed boards: built from the whole event log off to the side, compared, switched live.

A draft is a Redis generation of the board (consumers/generations.py), filled under the draft's definition
from PostgreSQL's event log, partition by partition in offset order, through the same idempotent apply
script as the live path (``RedisSink.apply`` with an explicit generation: watermarks make a resumed or
repeated build count nothing twice). The live generation keeps serving meanwhile; nobody writes the draft
but its builder, so no live write can move a watermark past records the build still owes (G1).

Activation has two paths, both the ones a rebuild takes:

- the board is live in Redis: the draft chases the live generation's position from the event log and
  ``flip.lua`` switches readers and writers in one step (``catch_up_and_flip``), recording the draft's
  definition version in the board's meta; live writes made under the old version are refused from then on
  (apply.lua's fence) and their consumers reload the definitions and retry the batch;
- the board is not live (new, or retired): the catalog makes it active and each consumer, finding it missing
  in Redis, rebuilds it from its checkpoint while holding its own batch (the G5 recovery path: nothing
  between the load and the consumers' first write can be skipped). The checkpoint is folded here first, so
  that pause costs the players on the board, not the history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from consumers import checkpoints, period_store
from consumers.generations import Generations, finish_moderation
from consumers.lease import Lease
from consumers.plan import EVENT_COLUMNS, canonical_rows
from consumers.redis_sink import RedisSink
from leaderboard import catalog, catalog_store
from leaderboard.boards import Board
from leaderboard.catalog import Diff, Entry
from leaderboard.catalog_store import CatalogError
from leaderboard.keys import Keys
from leaderboard.moderation import store as moderation
from leaderboard.redis_client import SyncClient

CHUNK = 20_000
"""Events per read of the log while building a draft (what the builder holds in memory at once)."""
READ_CHUNK = 10_000
"""Sorted-set entries per read when comparing a draft with the live version."""


@dataclass(frozen=True)
class Built:
    generation: int
    events: int
    seconds: float


class Drafts:
    """Build, compare and activate drafts of one Redis keyspace."""

    def __init__(self, client: SyncClient, keys: Keys) -> None:
        self._r = client
        self._keys = keys

    def _gens(self, board: Board) -> Generations:
        return Generations(self._r, self._keys, [board])

    def lease(self, board: str) -> Lease:
        lease = Lease.take(self._r, self._keys.lock(board))
        if lease is None:
            raise CatalogError(
                f"board {board!r} is being rebuilt by another process (lock {self._keys.lock(board)})"
            )
        return lease

    def build(
        self,
        conn: psycopg.Connection,
        draft: Board,
        lease: Lease,
        progress: Callable[[int], None] = lambda n: None,
    ) -> Built:
        """Fill a new generation with the whole event log under ``draft``'s definition; record it."""
        if draft.version is None:
            raise CatalogError(f"board {draft.id!r}: only a stored draft can be built")
        started = time.monotonic()
        gens = self._gens(draft)
        gen = gens.new_generation(draft.id)
        view = moderation.load_view(conn)
        events = self.catch_up(conn, draft, gen, lease, progress)
        gens.drop_closed(draft, gen, conn)  # closed periods: their stored standings, from PostgreSQL
        finish_moderation(gens, conn, draft, gen, view.seq)
        catalog_store.set_draft_generation(conn, draft.id, draft.version, gen)
        return Built(gen, events, time.monotonic() - started)

    def catch_up(
        self,
        conn: psycopg.Connection,
        draft: Board,
        gen: int,
        lease: Lease,
        progress: Callable[[int], None] = lambda n: None,
    ) -> int:
        """Apply to the draft the stored events past its position, up to what PostgreSQL holds now; the
        number of events read. Idempotent (watermarks), resumable (the position moves with each chunk)."""
        sink = RedisSink(self._r, self._keys, [draft])
        view = moderation.load_view(conn)
        have = {int(p): int(o) for p, o in self._r.hgetall(self._keys.position(draft.id, gen)).items()}
        events = 0
        for part, hi in sorted(checkpoints.stored_positions(conn).items()):
            last = have.get(part, -1)
            while last < hi:
                lease.check()
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE kafka_partition = %s AND kafka_offset > %s"
                    " AND kafka_offset <= %s ORDER BY kafka_offset LIMIT %s",
                    (part, last, hi, CHUNK),
                ).fetchall()
                records = canonical_rows(rows)
                top = records[-1].offset if len(records) == CHUNK else hi
                sink.apply(records, gen=gen, pos={part: top}, keep=lambda b, r: view.counts(r.event, b.id))
                events += len(records)
                progress(events)
                last = top
        return events

    def activate(self, conn: psycopg.Connection, entry: Entry, lease: Lease) -> str:
        """Make the built draft live (see the module's docstring); returns what happened, one line."""
        draft, gen = entry.draft, entry.draft_generation
        if draft is None or draft.version is None:
            raise CatalogError(f"board {entry.board!r} has no draft to activate; apply a changed definition")
        if gen is None:
            raise CatalogError(f"board {entry.board!r}: draft version {draft.version} is not built yet")
        gens = self._gens(draft)
        live = gens.active(draft.id)
        if entry.state == "active" and live is not None:
            view = moderation.load_view(conn)
            sink = RedisSink(self._r, self._keys, [draft])
            replaced = gens.catch_up_and_flip(draft, gen, conn, sink, lease, view=view)
            catalog_store.activate(conn, draft.id, draft.version)
            gens.drop_replaced(replaced)
            # Every moderated player again (absolute, watermark-guarded recomputes): the draft was built
            # under an older moderation view than this one. Cost: the moderated players, not the history.
            finish_moderation(gens, conn, draft, gen, 0)
            gens.mirror_closed(draft, period_store.complete(conn, draft.id))
            # The board's checkpoint is refolded under its new definition now, not by the next close.
            checkpoints.advance(conn, draft, progress=lambda steps: lease.check())
            return f"board {draft.id}: version {draft.version} is live (generation {gen}; readers switched)"
        # Not live: the consumers load it from the checkpoint, holding their batches (no gap).
        checkpoints.advance(conn, draft, progress=lambda steps: lease.check())
        if live is not None:  # a retired board's frozen generation: readers see the new one once loaded
            self._r.hdel(self._keys.meta(draft.id), "writing", "active")
        catalog_store.activate(conn, draft.id, draft.version)
        gens.drop(draft.id, gen)  # the consumers load a generation of their own from the checkpoint
        return f"board {draft.id}: version {draft.version} is active; the consumers load it within seconds"

    def fence_retired(self, board: str) -> None:
        """After ``retire``: live writes to the board are refused (a consumer that has not reloaded yet)."""
        self._r.hset(self._keys.meta(board), "def", "retired")

    def standings(self, board: Board, gen: int, period: str) -> list[tuple[str, int]]:
        """(player, value) of a generation's period in board order (cost: the players on it)."""
        key = self._keys.board(board.id, gen, period)
        out: list[tuple[str, int]] = []
        start = 0
        while True:
            rows: list[tuple[bytes, float]] = self._r.zrevrange(  # type: ignore[assignment]
                key, start, start + READ_CHUNK - 1, withscores=True
            )
            for member, score in rows:
                name = member.decode() if isinstance(member, bytes) else str(member)
                out.append((name, board.rule.unpack(float(score))[0]))
            if len(rows) < READ_CHUNK:
                return out
            start += READ_CHUNK

    def diff(self, live: Board | None, entry: Entry, period: str, top: int) -> Diff:
        """The draft's standings of ``period`` against the live generation's (none for a new board)."""
        if entry.draft is None or entry.draft_generation is None:
            raise CatalogError(f"board {entry.board!r} has no built draft to compare")
        active = self._gens(entry.draft).active(entry.board)
        before = [] if live is None or active is None else self.standings(live, active, period)
        after = self.standings(entry.draft, entry.draft_generation, period)
        return catalog.diff(before, after, top)
