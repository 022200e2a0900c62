"""Blue/green generations of a board in Redis: load a new one off to the side, catch it up, flip atomically.

Readers follow ``meta.active``; live consumers write the generations in ``meta.writing``. A rebuild
(operator's ``rebuild``, or recovery after Redis lost its data) fills generation N+1 from the standings
checkpoint up to its per-partition positions, then applies the
tail from PostgreSQL through the same idempotent apply script until ``flip.lua`` finds it at or past the
live generation on every partition, and flips in one atomic step. Nothing is ever double-applied: the
loaded positions become the new generation's watermarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from redis.typing import EncodableT, FieldT

from consumers import checkpoints, due, period_store
from consumers.lease import Lease, held
from consumers.mirror import mirror
from consumers.moderation_apply import Recomputer, catch_up
from consumers.plan import EVENT_COLUMNS, Canonical, canonical_rows
from consumers.redis_sink import RedisSink
from leaderboard import shards
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.moderation import store as moderation
from leaderboard.moderation.view import View
from leaderboard.redis_client import SyncClient

log = logging.getLogger(__name__)

_CHUNK = 20_000
Replaced = dict[str, int]
"""Stored board (a board's id, or one shard's) -> the generation a flip replaced (absent: none)."""
STALL_S = 120.0
"""A catch-up that applies nothing and moves no position this long is stuck (not merely slow)."""


@dataclass
class Written:
    """What a checkpoint load wrote into a generation."""

    positions: dict[int, int]
    entries: int
    periods: int
    moderation_seq: int = 0
    """The last moderation action the checkpoint's rows reflect (later ones are applied after the flip)."""


class Generations:
    """Rebuild and flip the generations of boards."""

    def __init__(self, client: SyncClient, keys: Keys, boards: Sequence[Board]) -> None:
        self._r = client
        self._keys = keys
        self._boards = {b.id: b for b in boards}
        self._flip = client.register_script(script("flip"))
        self._standings = client.register_script(script("standings"))

    def recomputer(self, board: Board) -> Recomputer:
        """Moderation recomputes on this board's generations (consumers/moderation_apply.py)."""
        return Recomputer(self._r, self._keys, [board])

    def active(self, board: str) -> int | None:
        """The active generation of a stored board (a board of one shard, or one shard's id)."""
        raw = self._r.hget(self._keys.meta(board), "active")
        return None if raw is None else int(raw)

    def _parts(self, board: str) -> list[str]:
        """The stored ids of a board: its shards' (leaderboard.shards), or its own."""
        known = self._boards.get(board)
        return [board] if known is None else [p.id for p in shards.parts(known)]

    def missing(self) -> list[str]:
        """Boards whose live generation Redis does not have, on any shard (first start, or Redis lost its
        data)."""
        stored = [(b, part) for b in self._boards for part in self._parts(b)]
        pipe = self._r.pipeline(transaction=False)
        for _, part in stored:
            pipe.hget(self._keys.meta(part), "writing")
        return list(dict.fromkeys(b for (b, _), w in zip(stored, pipe.execute(), strict=True) if w is None))

    def lease(self, board: str) -> Lease | None:
        """The board's rebuild lock, renewing itself until released; None if another process holds it."""
        return Lease.take(self._r, self._keys.lock(board))

    def mirror_closed(self, board: Board, closed: set[str]) -> None:
        """The board's closed set again (Redis may have lost it), and the retention of closed periods' keys
        a generation still holds (a new one holds none: the API serves them from PostgreSQL)."""
        mirror(self._r, self._keys, board, closed)

    def rebuilding(self, board: str) -> bool:
        """Whether some process holds the board's rebuild lock now."""
        return held(self._r, self._keys.lock(board))

    def new_generation(self, board: str) -> int:
        """A generation number no shard of the board has used: the shards of a board share their numbers,
        so one tail replay (RedisSink with ``gen``) writes all of them."""
        gen = 0
        for part in self._parts(board):
            gen = max(gen, int(self._r.hincrby(self._keys.meta(part), "seq", 1)))
            active = self.active(part)
            if active is not None and gen <= active:  # seq lost with a partial wipe: stay ahead of active
                gen = active + 1
        for part in self._parts(board):
            self._r.hset(self._keys.meta(part), "seq", gen)
        self.drop(board, gen)  # leftovers of a rebuild that died half-way
        return gen

    def drop(self, board: str, gen: int) -> int:
        """Unlink every key of generation ``gen`` of the board (each shard's)."""
        return sum(self._unlink(part, gen) for part in self._parts(board))

    def drop_replaced(self, replaced: Replaced) -> None:
        """Unlink the generations a flip replaced (:meth:`catch_up_and_flip`), shard by shard."""
        for part, old in replaced.items():
            self._unlink(part, old)

    def _unlink(self, part: str, gen: int) -> int:
        n = 0
        batch: list[bytes] = []
        for key in self._r.scan_iter(match=f"{self._keys.gen(part, gen)}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += int(self._r.unlink(*batch))
                batch.clear()
        if batch:
            n += int(self._r.unlink(*batch))
        return n

    def _finish(self, board: str, gen: int, events: dict[str, int], positions: dict[int, int]) -> None:
        """A loaded generation's stats, period set, watermarks, position and floor (the load's positions),
        of a stored board (one shard's id for a sharded board)."""
        keys = self._keys
        now_ms = str(int(time.time() * 1000))
        pos: dict[FieldT, EncodableT] = {str(p): str(o) for p, o in positions.items()}
        pipe = self._r.pipeline(transaction=False)
        for period, n in events.items():
            pipe.hset(keys.stats(board, gen, period), mapping={"events": str(n), "updated_ms": now_ms})
            if pos:
                pipe.hset(keys.watermark(board, gen, period), mapping=pos)
        if events:
            pipe.sadd(keys.periods(board, gen), *sorted(events))
        if pos:
            pipe.hset(keys.position(board, gen), mapping=pos)
            pipe.hset(keys.floor(board, gen), mapping=pos)
        pipe.execute()

    def write_checkpoint(
        self,
        board: Board,
        gen: int,
        conn: psycopg.Connection,
        lease: Lease | None = None,
        view: View | None = None,
    ) -> Written:
        """Stream the board's checkpoint into generation ``gen``, its positions as watermarks.

        ``view`` (moderation): players it holds off the board are left out (the checkpoint keeps them).

        One REPEATABLE READ snapshot, so rows and positions agree; PostgreSQL scores the rows and they
        arrive in chunks (``checkpoints.ENTRIES``) that standings.lua writes, so memory is bounded whatever
        the board's size and Python does no work per player. Only open periods are loaded: a closed one
        (standings stored) is absent from the new generation and the API serves it from its stored
        standings, which is what its Redis copy held (ADR 0023). So the cost is the players of the open
        periods, whatever the number of closed periods still in their Redis retention. A sharded board:
        each shard's rows (selected by PostgreSQL) into that shard's generation ``gen``.
        """
        keys = self._keys
        written = 0
        stored_parts = shards.parts(board)
        events: dict[str, dict[str, int]] = {part.id: {} for part in stored_parts}
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            pos = checkpoints.positions(conn, board.id)
            mod_seq = checkpoints.moderation_seq(conn, board.id)
            stored = period_store.complete(conn, board.id)
            wanted = [p for p in checkpoints.periods_of(conn, board.id) if p not in stored]
            leave_out = [] if view is None else view.held_off(board.id)
            marks = board.aggregation == "last"
            for period in wanted:
                for shard, stored_part in enumerate(stored_parts):
                    period_keys = [keys.board(stored_part.id, gen, period)]
                    if marks:
                        period_keys.append(keys.latest(stored_part.id, gen, period))
                    mine = events[stored_part.id]
                    for chunk in checkpoints.stream_entries(
                        conn, board, period, leave_out, marks=marks, shard=shard
                    ):
                        # One call per chunk, not a pipeline: redis-py's cluster pipeline refuses EVALSHA.
                        self._standings(keys=period_keys, args=["add", chunk.blob])
                        mine[period] = mine.get(period, 0) + chunk.events
                        written += chunk.rows
                        if lease is not None:
                            lease.check()
        for part_id, of_part in events.items():
            self._finish(part_id, gen, of_part, pos)
        return Written(pos, written, len({p for e in events.values() for p in e}), mod_seq)

    def drop_closed(self, board: Board, gen: int, conn: psycopg.Connection) -> int:
        """Take the closed periods (standings stored) out of ``gen``, which folded them from raw records
        (``rebuild --from kafka``, a board draft): the API serves them from their stored standings, as
        after any rebuild. Returns the periods taken out."""
        periods = sorted(period_store.complete(conn, board.id))
        if not periods:
            return 0
        keys = self._keys
        for part in shards.parts(board):
            doomed = [
                key
                for period in periods
                for key in (
                    keys.board(part.id, gen, period),
                    keys.watermark(part.id, gen, period),
                    keys.stats(part.id, gen, period),
                    keys.latest(part.id, gen, period),
                )
            ]
            for i in range(0, len(doomed), 400):  # UNLINK: Redis frees big sets off its main thread
                self._r.unlink(*doomed[i : i + 400])
            self._r.srem(keys.periods(part.id, gen), *periods)
        return len(periods)

    def _try_flip(self, board: Board, part: str, gen: int) -> list[bytes]:
        """flip.lua on a stored board (``part``: the board's id or one shard's), declaring the positions of
        ``gen`` and of the live generation (read again while another process flips between the read and the
        call); it records the definition version ``gen`` was built under (meta.def: the definition fence of
        boards managed at runtime)."""
        keys = self._keys
        version = "" if board.version is None else str(board.version)
        for _ in range(8):
            before = self.active(part)
            declared = [keys.meta(part), keys.position(part, gen)]
            if before is not None:
                declared.append(keys.position(part, before))
            res: list[bytes] = self._flip(
                keys=declared, args=[keys.base(part), gen, "" if before is None else str(before), version]
            )
            if res[0] != b"stale":
                return res
        raise RuntimeError(f"board {part}: its live generation kept changing while flipping {gen}")

    def _positions(self, part: str, gen: int | None) -> dict[int, int]:
        if gen is None:
            return {}
        return {int(p): int(o) for p, o in self._r.hgetall(self._keys.position(part, gen)).items()}

    def catch_up_and_flip(  # noqa: PLR0917 - kept positional for both rebuild paths
        self,
        board: Board,
        gen: int,
        conn: psycopg.Connection,
        sink: RedisSink,
        lease: Lease | None = None,
        stall_s: float = STALL_S,
        view: View | None = None,
    ) -> Replaced:
        """Apply the PostgreSQL tail to ``gen`` until it is at or past the live generation, then flip.

        No deadline on the whole: the live stream may keep it busy for a while. It gives up only when a
        round makes no progress (no tail row applied, no position moved) for ``stall_s``, or the lock is
        lost. Returns the generation each stored board (each shard) replaced. ``view``: what counts
        (moderation); the actions after it are applied by :func:`finish_moderation` after the flip.
        A sharded board's shards flip one by one, each once it is caught up: a reader meanwhile may see
        some at the new generation and some at the old, each complete up to the live stream.
        ``sink`` must hold ``board`` (a tail row goes to every shard's generation ``gen``).
        """
        keep = None if view is None else (lambda b, r: view.counts(r.event, b.id))
        pending = [part.id for part in shards.parts(board)]
        replaced: Replaced = {}
        last_progress = time.monotonic()
        while True:
            if lease is not None:
                lease.check()
            for part in list(pending):
                res = self._try_flip(board, part, gen)
                if res[0] == b"flipped":
                    pending.remove(part)
                    if res[1] and int(res[1]) != gen:
                        replaced[part] = int(res[1])
            if not pending:
                return replaced
            if self._tail(pending, gen, conn, sink, keep):
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise TimeoutError(
                    f"board {board.id}: generation {gen} made no progress towards the live one"
                    f" for {stall_s:.0f} s"
                )
            else:
                time.sleep(0.05)

    def _tail(
        self,
        pending: list[str],
        gen: int,
        conn: psycopg.Connection,
        sink: RedisSink,
        keep: Callable[[Board, Canonical], bool] | None,
    ) -> bool:
        """One round of the tail for the stored boards not flipped yet, from the least advanced shard to
        the most advanced live one (each shard's watermarks skip what it has); whether anything moved."""
        haves = [self._positions(part, gen) for part in pending]
        live: dict[int, int] = {}
        for part in pending:
            for p, o in self._positions(part, self.active(part)).items():
                live[p] = max(live.get(p, -1), o)
        mine = {p: min(have.get(p, -1) for have in haves) for p in live}
        moved = False
        for part_no, live_hi in live.items():
            if live_hi <= mine[part_no]:
                continue
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE kafka_partition = %s AND kafka_offset > %s "
                "ORDER BY kafka_offset LIMIT %s",
                (part_no, mine[part_no], _CHUNK),
            ).fetchall()
            if rows:
                sink.apply(canonical_rows(rows), gen=gen, keep=keep)
                moved = True
            if len(rows) < _CHUNK:  # every canonical event up to live_hi is stored, so gen has them all
                for part in pending:
                    self._r.hset(self._keys.position(part, gen), str(part_no), str(live_hi))
                moved = True
        return moved


def retired_periods(conn: psycopg.Connection, board: Board, now: datetime) -> list[str]:
    """Closed periods of the board whose Redis retention is over (served from PostgreSQL standings)."""
    rows = conn.execute(
        "SELECT period FROM closed_periods WHERE board = %s AND standings_at IS NOT NULL", (board.id,)
    ).fetchall()
    return [str(r[0]) for r in rows if due.expire_at(board, str(r[0])) <= now]


def finish_moderation(
    gens: Generations, conn: psycopg.Connection, board: Board, gen: int, after: int
) -> None:
    """After a flip: apply to the new generation the moderation actions its source did not reflect
    (seq > ``after``): a recompute of their players only. The live consumers wrote them to the old
    generation; from the flip on they write this one too."""
    catch_up(conn, gens.recomputer(board), after, moderation.load_view(conn), {board.id: [gen]})


def rebuild_from_checkpoint(  # noqa: PLR0917 - the two callers pass the same six things
    gens: Generations,
    sink: RedisSink,
    conn: psycopg.Connection,
    board: Board,
    lease: Lease,
    progress: Callable[[str], None] | None = None,
) -> tuple[int, Written]:
    """THE rebuild from PostgreSQL (operator's ``rebuild --from postgres`` and Redis-loss recovery).

    Folds the event log's tail into the board's checkpoint, streams the checkpoint into a new generation,
    applies the tail after its positions and flips. Cost: the players on the board plus the tail, never
    all history. The caller holds ``lease``; losing it stops the job with LockLost.
    """
    say = progress or (lambda line: log.info(line, extra={"board": board.id}))
    started = time.monotonic()
    done = checkpoints.advance(conn, board, progress=lambda steps: lease.check())
    say(f"board {board.id}: checkpoint folded ({done.steps} step(s)) in {time.monotonic() - started:.1f} s")
    lease.check()
    view = moderation.load_view(conn)
    gen = gens.new_generation(board.id)
    written = gens.write_checkpoint(board, gen, conn, lease, view)
    say(
        f"board {board.id}: generation {gen} loaded,"
        f" {written.entries:,} entries in {written.periods} period(s)"
    )
    replaced = gens.catch_up_and_flip(board, gen, conn, sink, lease, view=view)
    gens.drop_replaced(replaced)
    finish_moderation(gens, conn, board, gen, min(written.moderation_seq, view.seq))
    gens.mirror_closed(board, period_store.complete(conn, board.id))  # the closed set, again
    log.info(
        "board rebuilt from the checkpoint",
        extra={
            "board": board.id,
            "generation": gen,
            "replaced": sorted(set(replaced.values())),
            "entries": written.entries,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return gen, written
