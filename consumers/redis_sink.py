"""Applies planned batches to Redis through ``apply.lua`` in calls of bounded size.

A script holds Redis while it runs, so one call per 5,000-event batch stalled every reader for ~60 ms on a
5M-player board. Each board's share of a batch is therefore cut into chunks of at most ``max_updates``
sorted-set updates, in offset order per partition. Every chunk moves the watermarks it touches to its own
last offsets, atomically with its writes, so a failure between chunks leaves a prefix applied and the
retried batch skips exactly that prefix (a chunk whose predecessor did not land is refused, see ``apply``).
The batch's positions (``pos``) go with a board's FIRST chunk: the batch is committed to PostgreSQL by then,
and flip.lua waits until a rebuilt generation's position reaches the live one's, so a flip that falls
between two chunks cannot leave the new generation without the chunks applied before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import orjson
from redis.cluster import RedisCluster

from consumers import names as display_names
from consumers.plan import BUCKET_S, Canonical, Fold, Slot, fold, payload, positions, targets
from leaderboard import shards
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import script
from leaderboard.redis_client import FAILURES, SyncClient, recover


class RedisLost(RuntimeError):
    """A board's meta key is gone: Redis restarted empty or was flushed. Recovery must rebuild it."""

    def __init__(self, boards: list[str]) -> None:
        super().__init__(f"Redis has no state for boards {boards}; rebuilding from PostgreSQL")
        self.boards = boards


class RedisBehind(RuntimeError):
    """Redis lost writes it had acknowledged (a failover to a replica that had not received them, a restart
    from an old AOF): the live generation of ``boards`` is below positions this sink saw it accept, or the
    names hash below the positions of names it wrote (``names``). Raised after the batch was applied: the
    caller repairs from PostgreSQL (rebuild the boards, copy the names), ``forget()``s, and retries."""

    def __init__(self, boards: list[str], names: bool) -> None:
        what = [f"boards {boards}"] if boards else []
        super().__init__(f"Redis lost acknowledged writes ({', '.join([*what, 'names'] if names else what)})")
        self.boards = boards
        self.names = names


class DefinitionStale(RuntimeError):
    """A board's live definition in Redis is another version than this sink's (an ``activate`` switched
    it): nothing of the refused chunk was written. The caller reloads the definitions and retries."""

    def __init__(self, boards: dict[str, str]) -> None:
        super().__init__(f"boards {sorted(boards)} have another definition version in Redis; reloading")
        self.boards = boards
        """board -> the version Redis holds ('' none, 'retired')."""


class PartialLoop(RuntimeError):
    """Watermarks kept moving under us: another consumer is racing on the same partitions."""


class Body(NamedTuple):
    """One apply.lua payload and the period keys it writes (they name the keys the call declares)."""

    data: bytes
    periods: tuple[str, ...]


_MAX_PARTIAL_ROUNDS = 8
MAX_UPDATES = 250
"""Sorted-set updates per script call. Measured on a 1M-player board at ~25k updates/s (docs/benchmarks.md,
bench-growth redis): 250 halves the longest call against 500 and lowers read p99, for ~15% more Redis CPU
per event (each call's fixed work); Redis still has headroom at that rate. x2 while a rebuild's generation
is written too."""
CALLS_PER_TRIP = 2
"""Script calls sent per round trip. Redis reads a client's socket 16 KiB at a time and runs every whole
command it read before it serves anyone else, so one pipeline of a batch's calls holds a reader behind
several of them. On a 5M-player board at ~26k updates/s (docs/benchmarks.md, 2026-12-02 05:50 UTC) read p99
was 6 / 11 / 19 / 24 ms at 1 / 2 / 4 / all calls per trip; at 2, one consumer keeps 0.92 of the pipelined
rate (Redis and the consumer pay per trip). 2 keeps reads well under the 20 ms target."""


class RedisSink:
    def __init__(
        self,
        client: SyncClient,
        keys: Keys,
        boards: Sequence[Board],
        max_updates: int = MAX_UPDATES,
        calls_per_trip: int = CALLS_PER_TRIP,
    ) -> None:
        if max_updates < 1 or calls_per_trip < 1:
            raise ValueError("max_updates and calls_per_trip must be >= 1")
        self._r = client
        self._keys = keys
        self._shards: dict[str, tuple[int, int]] = {}
        """Storage id of a shard of a sharded board -> (shard, shards): it gets that shard's players only."""
        expanded: list[Board] = []
        for board in boards:
            for i, part in enumerate(shards.parts(board)):
                if board.shards > 1:
                    self._shards[part.id] = (i, board.shards)
                expanded.append(part)
        self._boards = tuple(expanded)
        """The boards as stored: a sharded board as one board per shard (leaderboard.shards), each with its
        own meta, generations and watermarks, one apply.lua call per chunk on its own slot."""
        self._max = max_updates
        self._per_trip = calls_per_trip
        self._source = script("apply")
        self._apply = client.register_script(script("apply"))
        self._cluster = isinstance(client, RedisCluster)
        self._writing: dict[str, str] = {}
        """board -> meta's ``writing`` as last read: the generations whose keys a live call declares
        (apply.lua answers ``stale`` when it changed; the call is then declared again and resent)."""
        self.seen: dict[int, int] = {}
        """Last offset per partition of the live batches Redis accepted from this sink (every board)."""
        self._names_seen: dict[int, int] = {}
        """The same for the batches that wrote names: the names hash has its own slot, so its own check."""

    def forget(self) -> None:
        """Stop expecting what Redis was seen to accept: after a repair from PostgreSQL (whose positions may
        stop short of a batch's trailing invalid records) or when Redis was rebuilt."""
        self.seen.clear()
        self._names_seen.clear()
        self._writing.clear()

    def apply(
        self,
        records: Sequence[Canonical],
        gen: int | None = None,
        pos: dict[int, int] | None = None,
        keep: Callable[[Board, Canonical], bool] | None = None,
        names: Mapping[str, str] | None = None,
    ) -> int:
        """Apply canonical records to every board; returns the number of sorted-set updates made.

        Idempotent: records at or below a board-period's watermark for their partition are skipped.
        ``pos`` is the batch's last offset per partition (invalid and duplicate records included).
        The chunks go ``calls_per_trip`` per round trip (:meth:`send`), so a reader waits behind at most
        that many calls. A chunk names, per slot, the last offset an earlier chunk of the batch had for it
        (``after``): if that one did not land, the script refuses this one too (a partial), so no watermark
        moves past records still owed. Partials are then resent in order, one call at a time.
        ``keep`` (moderation): which records count on a board; the others are stored but not applied.
        ``names``: the display names PostgreSQL changed with this batch (``pg_sink.Outcome.names``), written
        in the same pipeline; the records' own names are not looked at (consumers/names.py).
        A live batch (``gen`` None) also checks, in the same round trip, that Redis still holds what it
        accepted from earlier live batches (``seen``); if not, RedisBehind once this batch is applied.
        """
        pos = positions(records) if pos is None else pos
        if not records and not pos and not names:
            return 0
        live = gen is None
        now = str(int(time.time() * 1000))
        ordered = sorted(records, key=_position)
        pipe = self._r.pipeline(transaction=False)
        check_names = live and bool(self._names_seen)
        # The names position only rises (a rewind replays lower offsets): what this sink wrote bounds it.
        rising = {p: o for p, o in pos.items() if o > self._names_seen.get(p, -1)}
        skip = display_names.queue(pipe, self._keys, names or {}, rising, check=check_names)
        if live:
            self._read_writing([b.id for b in self._boards if b.id not in self._writing])
        calls: list[Board] = []
        sent: dict[str, list[Body]] = {}
        mine = {b.id: self._mine(b, ordered) for b in self._boards}
        for board in self._boards:
            bodies = self._bodies(
                board, chunks(board, mine[board.id], self._max), gen, pos, check=live, keep=keep
            )
            sent[board.id] = bodies
            calls += [board] * len(bodies)
        if not calls and not skip:
            return 0
        out = self.send(pipe, [(b, body) for b in self._boards for body in sent[b.id]], gen, now)
        results = out[skip:]
        if any(res[0] == b"stale" for res in results):
            results = self._redeclare(calls, results, sent, gen, now)
        lost = sorted({board.id for board, res in zip(calls, results, strict=True) if res[0] == b"nometa"})
        if lost:
            raise RedisLost(lost)
        stale = {
            board.id: res[1].decode()
            for board, res in zip(calls, results, strict=True)
            if res[0] == b"defstale"
        }
        if stale:
            raise DefinitionStale(stale)
        applied = 0
        behind: set[str] = set()
        partials: dict[str, list[str]] = {}
        for board, res in zip(calls, results, strict=True):
            applied += int(res[1])
            if int(res[2]):
                behind.add(board.id)
            partials.setdefault(board.id, []).extend(p.decode() for p in res[3:])
        for board in self._boards:
            if partials.get(board.id):
                applied += self._resolve_partials(board, mine[board.id], partials[board.id], now, keep)
        names_behind = check_names and display_names.behind(out[0], self._names_seen)
        if live:
            _raise(self.seen, pos)
            if names:
                _raise(self._names_seen, pos)
        if behind or names_behind:
            raise RedisBehind(sorted(behind), names_behind)
        return applied

    def _bodies(
        self,
        board: Board,
        parts: list[list[Canonical]],
        gen: int | None,
        pos: dict[int, int] | None,
        *,
        check: bool = False,
        keep: Callable[[Board, Canonical], bool] | None = None,
    ) -> list[Body]:
        """Payloads of a board's chunks, with ``after`` guards; the first carries the positions (with what
        this sink saw accepted, when ``check``)."""
        out: list[Body] = []
        last: dict[tuple[str, int], int] = {}
        for k, part in enumerate(parts):
            folded = fold(board, part) if keep is None else _fold_kept(board, part, keep)
            body = payload(board, folded, gen, pos if k == 0 else None)
            if body is None:
                continue
            if k == 0 and check and self.seen:
                # [partition, new position, seen]; -1 for a partition not in this batch: nothing to raise.
                mine = {int(p): int(o) for p, o in cast("list[list[int]]", body["pos"])}
                body["pos"] = [[p, mine.get(p, -1), o] for p, o in self.seen.items()] + [
                    [p, o] for p, o in mine.items() if p not in self.seen
                ]
            for period in cast("list[dict[str, Any]]", body["periods"]):
                for slot in period["parts"]:
                    key = (str(period["p"]), int(slot["pt"]))
                    if key in last:
                        slot["after"] = last[key]
                    last[key] = int(slot["hi"])
            periods = tuple(str(p["p"]) for p in cast("list[dict[str, Any]]", body["periods"]))
            out.append(Body(orjson.dumps(body), periods))
        return out

    def _mine(self, board: Board, ordered: list[Canonical]) -> list[Canonical]:
        """The records of a stored board: all of them, or a shard's players only (the batch's positions
        still go to every shard, so each knows how far the stream was applied)."""
        if board.id not in self._shards:
            return ordered
        shard, n = self._shards[board.id]
        return [r for r in ordered if shards.shard_of(r.event.player_id, n) == shard]

    def _read_writing(self, boards: list[str]) -> None:
        """Cache meta's ``writing`` of ``boards`` (one round trip); "" where absent (the call says nometa)."""
        if not boards:
            return
        pipe = self._r.pipeline(transaction=False)
        for board in boards:
            pipe.hget(self._keys.meta(board), "writing")
        try:
            out = pipe.execute()
        except FAILURES:
            recover(self._r)
            raise
        for board, raw in zip(boards, out, strict=True):
            self._writing[board] = "" if raw is None else raw.decode()

    def _redeclare(
        self, calls: list[Board], results: list[Any], sent: dict[str, list[Body]], gen: int | None, now: str
    ) -> list[Any]:
        """The results with each ``stale`` call (a rebuild started or flipped since ``writing`` was read)
        resent, in order, declaring the generations the script answered. A stale call wrote nothing; a call
        after it has an ``after`` guard, so none overtook it."""
        out = list(results)
        index: dict[str, int] = {}
        for i, (board, res) in enumerate(zip(calls, results, strict=True)):
            k = index[board.id] = index.get(board.id, -1) + 1
            if res[0] == b"stale":
                self._writing[board.id] = res[1].decode()
                out[i] = self._resend(board, sent[board.id][k], gen, now)
        return out

    def _resend(self, board: Board, body: Body, gen: int | None, now: str) -> Any:
        """One call on its own, declared again as long as ``writing`` keeps changing under it."""
        for _ in range(_MAX_PARTIAL_ROUNDS):
            res = self.call(board, body, gen, now)
            if res[0] != b"stale":
                return res
            self._writing[board.id] = res[1].decode()
        raise PartialLoop(f"board {board.id}: its generations changed during {_MAX_PARTIAL_ROUNDS} calls")

    def declared(self, board: Board, periods: Sequence[str], gen: int | None) -> tuple[list[str], list[str]]:
        """The KEYS of an apply.lua call on ``periods`` (of generation ``gen``, else of the ``writing``
        ones as cached) and the generations argument (ARGV[4], "" with ``gen``)."""
        last = board.aggregation == "last"
        keys = [self._keys.meta(board.id)]
        if gen is None and board.id not in self._writing:
            self._read_writing([board.id])
        writing = "" if gen is not None else self._writing[board.id]
        for g in [gen] if gen is not None else [int(x) for x in writing.split(",") if x]:
            keys += self._keys.generation(board.id, g, periods, latest=last)
        return keys, [writing] if gen is None else []

    def send(self, pipe: Any, calls: Sequence[tuple[Board, Body]], gen: int | None, now: str) -> list[Any]:
        """What ``pipe`` holds, then ``calls`` in order, ``calls_per_trip`` per round trip; every reply.

        A failed trip raises (after ``recover``); the trips before it landed, which the watermarks make safe
        to send again."""
        out: list[Any] = []
        try:
            if len(pipe) or self._per_trip > 1:
                # redis-py checks (SCRIPT EXISTS) and loads a pipeline's scripts before it sends them: once
                # here, so a restarted Redis gets the script back; the later trips send bare EVALSHAs.
                head, calls = calls[: self._per_trip], calls[self._per_trip :]
                for board, body in head:
                    self.call(board, body, gen, now, pipe)
                out += pipe.execute()
            for i in range(0, len(calls), self._per_trip):
                trip = calls[i : i + self._per_trip]
                if len(trip) == 1:
                    out.append(self.call(trip[0][0], trip[0][1], gen, now))
                    continue
                pipe = self._r.pipeline(transaction=False)
                for board, body in trip:
                    self.call(board, body, gen, now, pipe, bare=True)
                out += pipe.execute()
        except FAILURES:
            recover(self._r)
            raise
        return out

    def call(
        self, board: Board, body: Body, gen: int | None, now: str, pipe: Any = None, *, bare: bool = False
    ) -> Any:
        """One apply.lua call (queued on ``pipe`` if given), every key it may touch declared. ``bare``: as
        an EVALSHA the pipeline does not check first (the script was just loaded; a NOSCRIPT fails the
        batch, whose retry loads it again)."""
        keys, writing = self.declared(board, body.periods, gen)
        args: list[str | bytes] = [self._keys.base(board.id), body.data, now, *writing]
        if pipe is not None and self._cluster:
            # redis-py refuses EVALSHA in a cluster pipeline (it cannot load the script on the nodes there);
            # EVAL carries the source, which also spares a replica promoted since, that never loaded it.
            return pipe.execute_command("EVAL", self._source, len(keys), *keys, *args)
        if pipe is not None and bare:
            return pipe.execute_command("EVALSHA", self._apply.sha, len(keys), *keys, *args)
        return self._apply(keys=keys, args=args, client=pipe)

    def _resolve_partials(
        self,
        board: Board,
        ordered: Sequence[Canonical],
        partials: list[str],
        now: str,
        keep: Callable[[Board, Canonical], bool] | None = None,
    ) -> int:
        """Resend, chunk by chunk and one call at a time, only the records past each watermark a chunk
        overlapped (zombie or rewind) or that waited behind such a chunk."""
        applied = 0
        for _ in range(_MAX_PARTIAL_ROUNDS):
            by_gen: dict[int, dict[tuple[str, int], int]] = {}
            for item in partials:
                gen_text, period, partition, wm = item.rsplit("|", 3)
                marks = by_gen.setdefault(int(gen_text), {})
                slot = (period, int(partition))
                marks[slot] = min(int(wm), marks.get(slot, int(wm)))
            partials = []
            for target, above in by_gen.items():
                for slot, mark in sorted(above.items()):
                    past = [r for r in ordered if r.partition == slot[1] and r.offset > mark]
                    for body in self._bodies(board, chunks(board, past, self._max), target, None, keep=keep):
                        only = _only(body.data, slot)
                        if only is None:
                            continue
                        res = self.call(board, Body(only, (slot[0],)), target, now)
                        if res[0] != b"ok":  # not with a target generation; kept as a guard
                            if res[0] == b"defstale":
                                raise DefinitionStale({board.id: res[1].decode()})
                            raise RedisLost([board.id])
                        applied += int(res[1])
                        partials.extend(p.decode() for p in res[3:])
            if not partials:
                return applied
        raise PartialLoop(f"board {board.id}: watermarks moved during {_MAX_PARTIAL_ROUNDS} retries")


def _fold_kept(board: Board, part: Sequence[Canonical], keep: Callable[[Board, Canonical], bool]) -> Fold:
    """fold of the records ``keep`` lets count, with every slot's offsets spanning ALL the chunk's records
    (a slot of only moderated records has no players): the watermarks move past moderated events too, so
    a moderation recompute knows they were processed (and counts them once they count again)."""
    kept = [r for r in part if keep(board, r)]
    folded = fold(board, kept)
    if len(kept) == len(part):
        return folded  # fold's slots already span every record that feeds them
    for rec in part:
        for key, _, _ in targets(board, rec.event):
            slot = folded.get((key, rec.partition))
            if slot is None:
                folded[(key, rec.partition)] = Slot(rec.offset, rec.offset, {})
            else:
                slot.lo, slot.hi = min(slot.lo, rec.offset), max(slot.hi, rec.offset)
    return folded


def _only(body: bytes, slot: tuple[str, int]) -> bytes | None:
    """The payload cut down to one (period, partition) slot, or None if it has nothing for it."""
    doc = orjson.loads(body)
    for period in doc["periods"]:
        if period["p"] == slot[0]:
            period["parts"] = [s for s in period["parts"] if s["pt"] == slot[1]]
            if period["parts"]:
                doc["periods"] = [period]
                return orjson.dumps(doc)
    return None


def _raise(marks: dict[int, int], pos: Mapping[int, int]) -> None:
    for p, o in pos.items():
        if o > marks.get(p, -1):
            marks[p] = o


def _position(rec: Canonical) -> tuple[int, int]:
    return rec.partition, rec.offset


def chunks(board: Board, ordered: Sequence[Canonical], max_updates: int) -> list[list[Canonical]]:
    """The records ``board`` accepts, cut in (partition, offset) order into chunks whose fold makes at most
    ``max_updates`` sorted-set updates (a single event's periods may exceed it alone; it still gets a chunk).

    The weight counts what ``fold`` turns into one update: a player once per (partition, 15-minute bucket),
    times the period keys of that bucket - an upper bound, since two buckets may share a period key.
    Always at least one chunk, so there is a call to carry the batch's positions.
    """
    out: list[list[Canonical]] = []
    cur: list[Canonical] = []
    seen: set[tuple[int, int, str]] = set()
    weight = 0
    for rec in ordered:
        e = rec.event
        keys = targets(board, e)
        if not keys:
            continue
        group = (rec.partition, int(e.occurred_at.timestamp()) // BUCKET_S, e.player_id)
        cost = 0 if group in seen else len(keys)
        if cur and weight + cost > max_updates:
            out.append(cur)
            cur, seen, weight = [], set(), 0
            cost = len(keys)
        cur.append(rec)
        seen.add(group)
        weight += cost
    out.append(cur)
    return out
