"""Applies planned batches to Redis through ``apply.lua``: one script call per board per batch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import orjson
import redis
from redis.typing import EncodableT, FieldT

from consumers.plan import Canonical, Fold, fold, payload, positions
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


class RedisSink:
    def __init__(self, client: redis.Redis, keys: Keys, boards: Sequence[Board]) -> None:
        self._r = client
        self._keys = keys
        self._boards = tuple(boards)
        self._apply = client.register_script(source("apply"))

    def apply(
        self, records: Sequence[Canonical], gen: int | None = None, pos: dict[int, int] | None = None
    ) -> int:
        """Apply canonical records to every board; returns the number of sorted-set updates made.

        Idempotent: records at or below a board-period's watermark for their partition are skipped.
        ``pos`` is the batch's last offset per partition (invalid and duplicate records included).
        """
        pos = positions(records) if pos is None else pos
        if not records and not pos:
            return 0
        now = str(int(time.time() * 1000))
        calls: list[tuple[Board, bytes]] = []
        for board in self._boards:
            planned = payload(board, fold(board, records), gen, pos)
            if planned is not None:
                calls.append((board, orjson.dumps(planned)))
        names = _latest_names(records)
        if not calls and not names:
            return 0
        pipe = self._r.pipeline(transaction=False)
        if names:
            pipe.hset(self._keys.names(), mapping=names)
        for board, body in calls:
            self._apply(
                keys=[self._keys.meta(board.id)], args=[self._keys.base(board.id), body, now], client=pipe
            )
        results = pipe.execute()[1 if names else 0 :]
        lost = [board.id for (board, _), res in zip(calls, results, strict=True) if res[0] == b"nometa"]
        if lost:
            raise RedisLost(lost)
        applied = 0
        for (board, _), res in zip(calls, results, strict=True):
            applied += int(res[1])
            if len(res) > 2:
                applied += self._resolve_partials(board, records, [p.decode() for p in res[2:]], now)
        return applied

    def _resolve_partials(
        self, board: Board, records: Sequence[Canonical], partials: list[str], now: str
    ) -> int:
        """Resend only the records past each watermark a batch overlapped (zombie or rewind)."""
        applied = 0
        for _ in range(_MAX_PARTIAL_ROUNDS):
            by_gen: dict[int, dict[tuple[str, int], int]] = {}
            for item in partials:
                gen_text, period, partition, wm = item.rsplit("|", 3)
                by_gen.setdefault(int(gen_text), {})[(period, int(partition))] = int(wm)
            partials = []
            for target, above in by_gen.items():
                folded: Fold = {}
                for slot, mark in above.items():
                    past = fold(board, [r for r in records if r.partition == slot[1] and r.offset > mark])
                    if slot in past:
                        folded[slot] = past[slot]
                body = payload(board, folded, target)
                if body is None:
                    continue
                res = self._apply(
                    keys=[self._keys.meta(board.id)],
                    args=[self._keys.base(board.id), orjson.dumps(body), now],
                )
                applied += int(res[1])
                partials.extend(p.decode() for p in res[2:])
            if not partials:
                return applied
        raise PartialLoop(f"board {board.id}: watermarks moved during {_MAX_PARTIAL_ROUNDS} retries")


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
