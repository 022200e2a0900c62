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
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import orjson
import redis
from redis.typing import EncodableT, FieldT

from consumers.plan import BUCKET_S, Canonical, fold, payload, positions, targets
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.lua_scripts import source


class RedisLost(RuntimeError):
    """A board's meta key is gone: Redis restarted empty or was flushed. Recovery must rebuild it."""

    def __init__(self, boards: list[str]) -> None:
        super().__init__(f"Redis has no state for boards {boards}; rebuilding from PostgreSQL")
        self.boards = boards


class PartialLoop(RuntimeError):
    """Watermarks kept moving under us: another consumer is racing on the same partitions."""


_MAX_PARTIAL_ROUNDS = 8
MAX_UPDATES = 250
"""Sorted-set updates per script call. Measured on a 1M-player board at ~25k updates/s (docs/benchmarks.md,
bench-growth redis): 250 halves the longest call against 500 and lowers read p99, for ~15% more Redis CPU
per event (each call's fixed work); Redis still has headroom at that rate. x2 while a rebuild's generation
is written too."""


class RedisSink:
    def __init__(
        self, client: redis.Redis, keys: Keys, boards: Sequence[Board], max_updates: int = MAX_UPDATES
    ) -> None:
        if max_updates < 1:
            raise ValueError("max_updates must be >= 1")
        self._r = client
        self._keys = keys
        self._boards = tuple(boards)
        self._max = max_updates
        self._apply = client.register_script(source("apply"))

    def apply(
        self, records: Sequence[Canonical], gen: int | None = None, pos: dict[int, int] | None = None
    ) -> int:
        """Apply canonical records to every board; returns the number of sorted-set updates made.

        Idempotent: records at or below a board-period's watermark for their partition are skipped.
        ``pos`` is the batch's last offset per partition (invalid and duplicate records included).
        Every chunk of every board goes in one pipeline (one round trip; Redis serves other clients between
        the calls). A chunk names, per slot, the last offset an earlier chunk of the batch had for it
        (``after``): if that one did not land, the script refuses this one too (a partial), so no watermark
        moves past records still owed. Partials are then resent in order, one call at a time.
        """
        pos = positions(records) if pos is None else pos
        if not records and not pos:
            return 0
        now = str(int(time.time() * 1000))
        ordered = sorted(records, key=_position)
        pipe = self._r.pipeline(transaction=False)
        items = list(_latest_names(records).items())
        skip = 0
        for i in range(0, len(items), self._max):
            pipe.hset(self._keys.names(), mapping=dict(items[i : i + self._max]))
            skip += 1
        calls: list[Board] = []
        for board in self._boards:
            for body in self._bodies(board, chunks(board, ordered, self._max), gen, pos):
                self._call(board, body, now, pipe)
                calls.append(board)
        if not calls and not skip:
            return 0
        results = pipe.execute()[skip:]
        lost = sorted({board.id for board, res in zip(calls, results, strict=True) if res[0] == b"nometa"})
        if lost:
            raise RedisLost(lost)
        applied = 0
        partials: dict[str, list[str]] = {}
        for board, res in zip(calls, results, strict=True):
            applied += int(res[1])
            partials.setdefault(board.id, []).extend(p.decode() for p in res[2:])
        for board in self._boards:
            if partials.get(board.id):
                applied += self._resolve_partials(board, ordered, partials[board.id], now)
        return applied

    def _bodies(
        self, board: Board, parts: list[list[Canonical]], gen: int | None, pos: dict[int, int] | None
    ) -> list[bytes]:
        """Payloads of a board's chunks, with ``after`` guards; the first carries the positions."""
        out: list[bytes] = []
        last: dict[tuple[str, int], int] = {}
        for k, part in enumerate(parts):
            folded = fold(board, part)
            body = payload(board, folded, gen, pos if k == 0 else None)
            if body is None:
                continue
            for period in cast("list[dict[str, Any]]", body["periods"]):
                for slot in period["parts"]:
                    key = (str(period["p"]), int(slot["pt"]))
                    if key in last:
                        slot["after"] = last[key]
                    last[key] = int(slot["hi"])
            out.append(orjson.dumps(body))
        return out

    def _call(self, board: Board, body: bytes, now: str, client: redis.client.Pipeline | None = None) -> Any:
        return self._apply(
            keys=[self._keys.meta(board.id)], args=[self._keys.base(board.id), body, now], client=client
        )

    def _resolve_partials(
        self, board: Board, ordered: Sequence[Canonical], partials: list[str], now: str
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
                    for body in self._bodies(board, chunks(board, past, self._max), target, None):
                        only = _only(body, slot)
                        if only is None:
                            continue
                        res = self._call(board, only, now)
                        applied += int(res[1])
                        partials.extend(p.decode() for p in res[2:])
            if not partials:
                return applied
        raise PartialLoop(f"board {board.id}: watermarks moved during {_MAX_PARTIAL_ROUNDS} retries")


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


def _latest_names(records: Sequence[Canonical]) -> dict[FieldT, EncodableT]:
    """Display names carried by the batch, the latest per player: by occurred_at, then Kafka position,
    the order pg_sink's players upsert uses too."""
    latest: dict[str, tuple[datetime, int, int, str]] = {}
    for rec in records:
        name = rec.event.display_name
        if name is not None:
            rank = (rec.event.occurred_at, rec.partition, rec.offset, name)
            cur = latest.get(rec.event.player_id)
            if cur is None or rank[:3] > cur[:3]:
                latest[rec.event.player_id] = rank
    return {p: v[3] for p, v in latest.items()}
