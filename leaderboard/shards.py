"""A board split into ``shards`` sorted sets per period, each on its own Redis Cluster slot (pure logic).

A player lives in shard ``crc32(player_id) % shards`` (stable across processes and languages, unlike
Python's ``hash``). Each shard is stored exactly like a board of its own, id ``<board>~<shard>`` (its own
hash tag ``{<board>~<shard>}``, so its own slot): meta, generations, watermarks per partition, stats, so
apply.lua writes it unchanged and every write stays idempotent per shard key. A board of one shard keeps its
plain id and keys.

Reads combine the shards with the same order as one sorted set: rank keys (higher is better on desc and asc
boards alike, leaderboard.aggregate) packed with the tie-break (leaderboard.scoring), equal packed scores in
reverse member order (ZRANGE ... REV). The I/O is in leaderboard.shard_reads.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Final

from leaderboard.boards import Board

SEP: Final = "~"
"""Between a board id and a shard number (board ids never hold it: leaderboard.boards._BOARD_ID)."""

Row = tuple[str, float]
"""(member, packed score), as a WITHSCORES reply gives them."""


def shard_of(player_id: str, shards: int) -> int:
    return zlib.crc32(player_id.encode()) % shards if shards > 1 else 0


def storage_id(board_id: str, shard: int, shards: int) -> str:
    """The id the shard's keys are named by (leaderboard.keys.Keys takes it where it takes a board id)."""
    return board_id if shards == 1 else f"{board_id}{SEP}{shard}"


def parts(board: Board) -> list[Board]:
    """The board's shards as boards of one shard each, in shard order (the board itself if unsharded)."""
    if board.shards == 1:
        return [board]
    return [replace(board, id=storage_id(board.id, s, board.shards), shards=1) for s in range(board.shards)]


def order_key(row: Row) -> tuple[float, str]:
    """A row's place on the board, larger first: packed score, then member (ZRANGE REV order)."""
    return row[1], row[0]


def merged(tops: Iterable[Sequence[Row]], offset: int, limit: int) -> list[Row]:
    """Rows [offset, offset + limit) of the board from each shard's rows in board order (each shard must
    give at least its first offset + limit, or all it has)."""
    out: list[Row] = []
    for i, row in enumerate(heapq.merge(*tops, key=order_key, reverse=True)):
        if i >= offset + limit:
            break
        if i >= offset:
            out.append(row)
    return out


def before(rows_above: Iterable[Sequence[Row]], count: int) -> list[Row]:
    """The ``count`` rows just above a position, in board order, from each shard's rows just above it (each
    in board order, the nearest last)."""
    if count <= 0:
        return []
    every = list(heapq.merge(*rows_above, key=order_key, reverse=True))
    return every[-count:]
