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
from consumers.plan import EVENT_COLUMNS, canonical_rows
from consumers.redis_sink import RedisSink
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.moderation import store as moderation
from leaderboard.moderation.view import View
from leaderboard.redis_client import SyncClient

log = logging.getLogger(__name__)

_CHUNK = 20_000
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
        raw = self._r.hget(self._keys.meta(board), "active")
        return None if raw is None else int(raw)

    def missing(self) -> list[str]:
        """Boards whose live generation Redis does not have (first start, or Redis lost its data)."""
        pipe = self._r.pipeline(transaction=False)
        for board in self._boards:
            pipe.hget(self._keys.meta(board), "writing")
        return [b for b, w in zip(self._boards, pipe.execute(), strict=True) if w is None]

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
        gen = int(self._r.hincrby(self._keys.meta(board), "seq", 1))
        active = self.active(board)
        if active is not None and gen <= active:  # seq lost with a partial wipe: stay ahead of active
            gen = active + 1
            self._r.hset(self._keys.meta(board), "seq", gen)
        self.drop(board, gen)  # leftovers of a rebuild that died half-way
        return gen

    def drop(self, board: str, gen: int) -> int:
        pattern = f"{self._keys.gen(board, gen)}:*"
        n = 0
        batch: list[bytes] = []
        for key in self._r.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                n += int(self._r.unlink(*batch))
                batch.clear()
        if batch:
            n += int(self._r.unlink(*batch))
        return n

    def _finish(self, board: Board, gen: int, events: dict[str, int], positions: dict[int, int]) -> None:
        """A loaded generation's stats, period set, watermarks, position and floor (the load's positions)."""
        keys = self._keys
        now_ms = str(int(time.time() * 1000))
        pos: dict[FieldT, EncodableT] = {str(p): str(o) for p, o in positions.items()}
        pipe = self._r.pipeline(transaction=False)
        for period, n in events.items():
            pipe.hset(keys.stats(board.id, gen, period), mapping={"events": str(n), "updated_ms": now_ms})
            if pos:
                pipe.hset(keys.watermark(board.id, gen, period), mapping=pos)
        if events:
            pipe.sadd(keys.periods(board.id, gen), *sorted(events))
        if pos:
            pipe.hset(keys.position(board.id, gen), mapping=pos)
            pipe.hset(keys.floor(board.id, gen), mapping=pos)
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
        periods, whatever the number of closed periods still in their Redis retention.
        """
        keys = self._keys
        written = 0
        events: dict[str, int] = {}
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            pos = checkpoints.positions(conn, board.id)
            mod_seq = checkpoints.moderation_seq(conn, board.id)
            stored = period_store.complete(conn, board.id)
            wanted = [p for p in checkpoints.periods_of(conn, board.id) if p not in stored]
            leave_out = [] if view is None else view.held_off(board.id)
            marks = board.aggregation == "last"
            for period in wanted:
                period_keys = [keys.board(board.id, gen, period)]
                if marks:
                    period_keys.append(keys.latest(board.id, gen, period))
                for part in checkpoints.stream_entries(conn, board, period, leave_out, marks=marks):
                    # One call per chunk, not a pipeline: redis-py's cluster pipeline refuses EVALSHA.
                    self._standings(keys=period_keys, args=["add", part.blob])
                    events[period] = events.get(period, 0) + part.events
                    written += part.rows
                    if lease is not None:
                        lease.check()
        self._finish(board, gen, events, pos)
        return Written(pos, written, len(events), mod_seq)

    def drop_closed(self, board: Board, gen: int, conn: psycopg.Connection) -> int:
        """Take the closed periods (standings stored) out of ``gen``, which folded them from raw records
        (``rebuild --from kafka``, a board draft): the API serves them from their stored standings, as
        after any rebuild. Returns the periods taken out."""
        periods = sorted(period_store.complete(conn, board.id))
        if not periods:
            return 0
        keys = self._keys
        doomed = [
            key
            for period in periods
            for key in (
                keys.board(board.id, gen, period),
                keys.watermark(board.id, gen, period),
                keys.stats(board.id, gen, period),
                keys.latest(board.id, gen, period),
            )
        ]
        for i in range(0, len(doomed), 400):  # UNLINK: Redis frees big sets off its main thread
            self._r.unlink(*doomed[i : i + 400])
        self._r.srem(keys.periods(board.id, gen), *periods)
        return len(periods)

    def _try_flip(self, board: Board, gen: int) -> list[bytes]:
        """flip.lua, declaring the positions of ``gen`` and of the live generation (read again while another
        process flips between the read and the call); it records the definition version ``gen`` was built
        under (meta.def: the definition fence of boards managed at runtime)."""
        keys = self._keys
        version = "" if board.version is None else str(board.version)
        for _ in range(8):
            before = self.active(board.id)
            declared = [keys.meta(board.id), keys.position(board.id, gen)]
            if before is not None:
                declared.append(keys.position(board.id, before))
            res: list[bytes] = self._flip(
                keys=declared, args=[keys.base(board.id), gen, "" if before is None else str(before), version]
            )
            if res[0] != b"stale":
                return res
        raise RuntimeError(f"board {board.id}: its live generation kept changing while flipping {gen}")

    def catch_up_and_flip(  # noqa: PLR0917 - kept positional for both rebuild paths
        self,
        board: Board,
        gen: int,
        conn: psycopg.Connection,
        sink: RedisSink,
        lease: Lease | None = None,
        stall_s: float = STALL_S,
        view: View | None = None,
    ) -> int | None:
        """Apply the PostgreSQL tail to ``gen`` until it is at or past the live generation, then flip.

        No deadline on the whole: the live stream may keep it busy for a while. It gives up only when a
        round makes no progress (no tail row applied, no position moved) for ``stall_s``, or the lock is
        lost. Returns the generation it replaced (None if there was none). ``view``: what counts
        (moderation); the actions after it are applied by :func:`finish_moderation` after the flip.
        """
        keep = None if view is None else (lambda b, r: view.counts(r.event, b.id))
        keys = self._keys
        last_progress = time.monotonic()
        while True:
            if lease is not None:
                lease.check()
            res = self._try_flip(board, gen)
            if res[0] == b"flipped":
                return int(res[1]) if res[1] else None
            mine = {int(p): int(o) for p, o in self._r.hgetall(keys.position(board.id, gen)).items()}
            live_active = self.active(board.id)
            live = (
                {}
                if live_active is None
                else {
                    int(p): int(o) for p, o in self._r.hgetall(keys.position(board.id, live_active)).items()
                }
            )
            moved = False
            for part, live_hi in live.items():
                if live_hi <= mine.get(part, -1):
                    continue
                rows = conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events WHERE kafka_partition = %s AND kafka_offset > %s "
                    "ORDER BY kafka_offset LIMIT %s",
                    (part, mine.get(part, -1), _CHUNK),
                ).fetchall()
                if rows:
                    sink.apply(canonical_rows(rows), gen=gen, keep=keep)
                    moved = True
                if len(rows) < _CHUNK:  # every canonical event up to live_hi is stored, so gen has them all
                    self._r.hset(keys.position(board.id, gen), str(part), str(live_hi))
                    moved = True
            if moved:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_s:
                raise TimeoutError(
                    f"board {board.id}: generation {gen} made no progress towards the live one"
                    f" for {stall_s:.0f} s"
                )
            else:
                time.sleep(0.05)


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
    old = gens.catch_up_and_flip(board, gen, conn, sink, lease, view=view)
    if old is not None and old != gen:
        gens.drop(board.id, old)
    finish_moderation(gens, conn, board, gen, min(written.moderation_seq, view.seq))
    gens.mirror_closed(board, period_store.complete(conn, board.id))  # the closed set, again
    log.info(
        "board rebuilt from the checkpoint",
        extra={
            "board": board.id,
            "generation": gen,
            "replaced": old,
            "entries": written.entries,
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return gen, written
