"""Blue/green generations of a board in Redis: load a new one off to the side, catch it up, flip atomically.

Readers follow ``meta.active``; live consumers write the generations in ``meta.writing``. A rebuild
(operator's ``rebuild``, or recovery after Redis lost its data) fills generation N+1 from a source
(a PostgreSQL snapshot or a replay of the topic) up to known per-partition positions, then applies the
tail from PostgreSQL through the same idempotent apply script until ``flip.lua`` finds it at or past the
live generation on every partition, and flips in one atomic step. Nothing is ever double-applied: the
loaded positions become the new generation's watermarks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import redis
from redis.typing import EncodableT, FieldT

from consumers.plan import Canonical, Fold, fold
from consumers.redis_sink import RedisSink
from leaderboard import scoring
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import source
from schemas.model import MatchWon

log = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    "event_id, match_id, player_id, game, mode, region, points, occurred_at, kafka_partition, kafka_offset"
)
_CHUNK = 20_000
_LOCK_MS = 120_000


def canonical_rows(rows: Sequence[tuple[object, ...]]) -> list[Canonical]:
    """Rows of ``_EVENT_COLUMNS`` as canonical records (every stored row is the canonical copy)."""
    out = []
    for eid, match_id, player_id, game, mode, region, points, occurred_at, part, off in rows:
        event = MatchWon(
            event_id=str(eid),
            match_id=str(match_id),
            player_id=str(player_id),
            game=str(game),
            mode=None if mode is None else str(mode),
            region=None if region is None else str(region),
            points=int(points),  # type: ignore[call-overload]
            occurred_at=occurred_at,  # type: ignore[arg-type]
        )
        out.append(Canonical(int(part), int(off), event))  # type: ignore[call-overload]
    return out


def stream_events(
    conn: psycopg.Connection, where: str = "", params: Sequence[object] = ()
) -> Iterator[list[Canonical]]:
    """Every stored event (optionally filtered), in chunks, through a server-side cursor."""
    with conn.cursor(name=f"events_{uuid.uuid4().hex[:8]}") as cur:
        cur.itersize = _CHUNK
        cur.execute(f"SELECT {_EVENT_COLUMNS} FROM events {where}", params)
        while rows := cur.fetchmany(_CHUNK):
            yield canonical_rows(rows)


def positions(conn: psycopg.Connection) -> dict[int, int]:
    """Highest stored offset per partition: every canonical event at or below it is stored (prefix)."""
    return {
        int(p): int(o)
        for p, o in conn.execute(
            "SELECT kafka_partition, max(kafka_offset) FROM events GROUP BY 1"
        ).fetchall()
    }


@dataclass
class Loaded:
    """A folded source and the per-partition positions it covers."""

    folded: Fold
    positions: dict[int, int]
    events: int


def load_from_postgres(
    conn: psycopg.Connection, board: Board, progress: Callable[[int], None] | None = None
) -> Loaded:
    """Fold every stored event in one consistent snapshot."""
    folded: Fold = {}
    events = 0
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        pos = positions(conn)
        for chunk in stream_events(conn):
            fold(board, chunk, into=folded, split_partitions=False)
            events += len(chunk)
            if progress is not None:
                progress(events)
    return Loaded(folded, pos, events)


class Generations:
    """Rebuild and flip the generations of boards."""

    def __init__(self, client: redis.Redis, keys: Keys, boards: Sequence[Board]) -> None:
        self._r = client
        self._keys = keys
        self._boards = {b.id: b for b in boards}
        self._flip = client.register_script(source("flip"))

    def active(self, board: str) -> int | None:
        raw = self._r.hget(self._keys.meta(board), "active")
        return None if raw is None else int(raw)

    def missing(self) -> list[str]:
        """Boards whose live generation Redis does not have (first start, or Redis lost its data)."""
        pipe = self._r.pipeline(transaction=False)
        for board in self._boards:
            pipe.hget(self._keys.meta(board), "writing")
        return [b for b, w in zip(self._boards, pipe.execute(), strict=True) if w is None]

    def lock(self, board: str) -> str | None:
        token = uuid.uuid4().hex
        return token if self._r.set(self._keys.lock(board), token, nx=True, px=_LOCK_MS) else None

    def refresh_lock(self, board: str, token: str) -> None:
        if self._r.get(self._keys.lock(board)) == token.encode():
            self._r.pexpire(self._keys.lock(board), _LOCK_MS)

    def unlock(self, board: str, token: str) -> None:
        if self._r.get(self._keys.lock(board)) == token.encode():
            self._r.delete(self._keys.lock(board))

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

    def write(self, board: Board, gen: int, loaded: Loaded) -> None:
        """Write a folded source into generation ``gen`` with its positions as watermarks."""
        keys = self._keys
        now = str(int(time.time() * 1000))
        pos: dict[FieldT, EncodableT] = {str(p): str(o) for p, o in loaded.positions.items()}
        pipe = self._r.pipeline(transaction=False)
        periods = sorted({period for period, _ in loaded.folded})
        for (period, _), slot in loaded.folded.items():
            zkey = keys.board(board.id, gen, period)
            mapping: dict[str, float] = {}
            events = 0
            for player, (points, tb, n) in slot.players.items():
                mapping[player] = scoring.pack(points, tb)
                events += n
                if len(mapping) >= 10_000:
                    pipe.zadd(zkey, mapping)
                    pipe.execute()
                    mapping = {}
            if mapping:
                pipe.zadd(zkey, mapping)
            pipe.hset(keys.stats(board.id, gen, period), mapping={"events": str(events), "updated_ms": now})
            if pos:
                pipe.hset(keys.watermark(board.id, gen, period), mapping=pos)
        if periods:
            pipe.sadd(keys.periods(board.id, gen), *periods)
        if pos:
            pipe.hset(keys.position(board.id, gen), mapping=pos)
            pipe.hset(keys.floor(board.id, gen), mapping=pos)
        pipe.execute()

    def catch_up_and_flip(
        self, board: Board, gen: int, conn: psycopg.Connection, sink: RedisSink, deadline_s: float = 600
    ) -> int | None:
        """Apply the PostgreSQL tail to ``gen`` until it is at or past the live generation, then flip.

        Returns the generation it replaced (None if there was none).
        """
        keys = self._keys
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            res = self._flip(keys=[keys.meta(board.id)], args=[keys.base(board.id), gen])
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
            for part, live_hi in live.items():
                if live_hi <= mine.get(part, -1):
                    continue
                rows = conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE kafka_partition = %s AND kafka_offset > %s "
                    "ORDER BY kafka_offset LIMIT %s",
                    (part, mine.get(part, -1), _CHUNK),
                ).fetchall()
                sink.apply(canonical_rows(rows), gen=gen)
                if len(rows) < _CHUNK:  # every canonical event up to live_hi is stored, so gen has them all
                    self._r.hset(keys.position(board.id, gen), str(part), str(live_hi))
        raise TimeoutError(f"board {board.id}: generation {gen} did not catch up within {deadline_s:.0f} s")


def rebuild_from_postgres(
    gens: Generations,
    sink: RedisSink,
    conn: psycopg.Connection,
    board: Board,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, Loaded]:
    """Rebuild one board from PostgreSQL as a new generation and flip to it. Caller holds the lock."""
    gen = gens.new_generation(board.id)
    loaded = load_from_postgres(conn, board, progress)
    gens.write(board, gen, loaded)
    old = gens.catch_up_and_flip(board, gen, conn, sink)
    if old is not None and old != gen:
        gens.drop(board.id, old)
    log.info(
        "board rebuilt from postgres",
        extra={
            "board": board.id,
            "generation": gen,
            "replaced": old,
            "events": loaded.events,
            "at": datetime.now(UTC).isoformat(),
        },
    )
    return gen, loaded
