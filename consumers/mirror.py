"""Redis side of closed periods: the board's ``closed`` set, and expiries on the period's keys."""

from __future__ import annotations

from collections.abc import Iterable

from consumers.due import expire_at
from leaderboard.boards import Board
from leaderboard.keys import Keys
from leaderboard.redis_client import SyncClient
from leaderboard.shards import parts


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def generations(client: SyncClient, keys: Keys, board: str) -> list[int]:
    """The active generation first, then any other generation live consumers write (a rebuild's)."""
    active, writing = client.hmget(keys.meta(board), ["active", "writing"])
    gens: list[int] = [] if active is None else [int(active)]
    for part in _text(writing or b"").split(","):
        if part.strip() and int(part) not in gens:
            gens.append(int(part))
    return gens


def mirror(client: SyncClient, keys: Keys, board: Board, closed: Iterable[str]) -> int:
    """Mirror closed periods (standings stored) into Redis: the ``closed`` set and key expiries. Idempotent.

    Also repairs what a rebuild (or Redis recovery) recreated without an expiry; an expiry in the past
    drops the keys at once, which is right: the API serves those periods from PostgreSQL.
    """
    closed = sorted(closed)
    if not closed:
        return 0
    pipe = client.pipeline(transaction=False)
    pipe.sadd(keys.closed(board.id), *closed)
    for part in parts(board):  # a sharded board: every shard's keys (the closed set is the board's)
        gens = generations(client, keys, part.id)
        present = set()
        if gens:
            present = {_text(p) for p in client.smembers(keys.periods(part.id, gens[0]))}
        for period in closed:
            if period not in present:
                continue
            when = expire_at(board, period)
            for gen in gens:
                for key in (
                    keys.board(part.id, gen, period),
                    keys.watermark(part.id, gen, period),
                    keys.stats(part.id, gen, period),
                    keys.latest(part.id, gen, period),
                ):
                    pipe.expireat(key, when)
    pipe.execute()
    return len(closed)
