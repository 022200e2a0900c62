"""A board split into ``shards`` sorted sets per period, each on its own Redis Cluster slot (pure logic).

A player lives in shard ``md5(player_id)[:4] % shards`` (:func:`shard_of`; stable across processes and
languages, unlike Python's ``hash``, and PostgreSQL computes the same with :func:`shard_sql`, so a rebuild
loads each shard's rows straight from the checkpoint). Each shard is stored exactly like a board of its
own, id ``<board>~<shard>[.k]``
(:func:`storage_id`: its own hash tag, so its own slot, in its own part of the slot space): meta,
generations, watermarks per partition, stats, so apply.lua writes it unchanged and every write stays
idempotent per shard key. A board of one shard keeps its plain id and keys.

Reads combine the shards with the same order as one sorted set: rank keys (higher is better on desc and asc
boards alike, leaderboard.aggregate) packed with the tie-break (leaderboard.scoring), equal packed scores in
reverse member order (ZRANGE ... REV). The I/O is in leaderboard.shard_reads.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS as SLOTS
from redis.crc import key_slot

from leaderboard.boards import Board

SEP: Final = "~"
"""Between a board id and a shard number (board ids never hold it: leaderboard.boards._BOARD_ID)."""

Row = tuple[str, float]
"""(member, packed score), as a WITHSCORES reply gives them."""


def shard_of(player_id: str, shards: int) -> int:
    """The first 4 bytes of the id's MD5 (UTF-8), big-endian, modulo ``shards`` (not for security: spread)."""
    if shards == 1:
        return 0
    return int.from_bytes(hashlib.md5(player_id.encode()).digest()[:4], "big") % shards  # noqa: S324


def shard_sql(column: str, shards: int) -> str:
    """:func:`shard_of` as a PostgreSQL expression over a text column (a trusted identifier)."""
    # mod(), not %: the text goes into statements with psycopg placeholders.
    return f"mod(('x' || substr(md5({column}), 1, 8))::bit(32)::bigint, {int(shards)})"


@cache
def storage_id(board_id: str, shard: int, shards: int) -> str:
    """The id the shard's keys are named by (leaderboard.keys.Keys takes it where it takes a board id):
    ``<board>~<shard>``, or ``<board>~<shard>.<k>`` with the smallest k that puts its hash tag's slot in the
    shard's 1/shards of the slot space. A cluster's slots are assigned to masters in ranges (``redis-cli
    --cluster create`` splits them evenly), so the shards spread over the masters instead of wherever crc16
    happens to put them (``{global~0..2}`` did, ``{chess~1}`` and ``{chess~2}`` shared one of three)."""
    if shards == 1:
        return board_id
    lo, hi = shard * SLOTS // shards, (shard + 1) * SLOTS // shards
    for k in range(SLOTS * 8):  # each try lands in the range with probability 1/shards
        sid = f"{board_id}{SEP}{shard}" if k == 0 else f"{board_id}{SEP}{shard}.{k}"
        if lo <= key_slot(sid.encode()) < hi:
            return sid
    raise RuntimeError(f"no hash tag for shard {shard} of {shards} of board {board_id!r}")


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
