"""Watermark lanes: a board-period's watermark per (partition, lane), a lane being a hash of the player.

Why: a script call is bounded to a few hundred sorted-set updates (consumers/redis_sink.py), and a batch
holds more than that per partition. Cut by offset alone, the pieces of a partition each folded only their
own records, so a hot player cost one update per piece (3.5 updates per event on the benchmark's load
against 2.0 for the whole batch, docs/benchmarks.md). Cut by lane, each piece holds ALL of the batch's
records of its players, so they fold fully, and its own watermark field keeps each piece exactly once.

A lane's field is ``"<partition>.<lane>"`` in the period's watermark hash. The plain ``"<partition>"`` field
is the base every lane starts from: a generation load's positions (consumers/generations.py) and what
writers before lanes stored. A lane's effective watermark is the larger of the two (and of the floor).
LANES is part of the stored format: changing it re-maps players to fields that do not know them.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from functools import lru_cache

LANES = 64


@lru_cache(maxsize=1 << 16)
def lane_of(player_id: str) -> int:
    """The player's lane: the CRC's high bits, so it does not follow leaderboard.shards' low-bit modulo."""
    return (zlib.crc32(player_id.encode()) >> 16) % LANES


def field(partition: int, lane: int) -> str:
    """The watermark hash field of a lane."""
    return f"{partition}.{lane}"


def parse(name: str) -> tuple[int, int | None]:
    """(partition, lane) of a watermark field; lane None for a partition's base field."""
    part, _, lane = name.partition(".")
    return int(part), int(lane) if lane else None


def mark(marks: Mapping[str, int], partition: int, lane: int) -> int:
    """The effective watermark of a lane in a period's watermark hash (-1: nothing applied)."""
    return max(marks.get(str(partition), -1), marks.get(field(partition, lane), -1))
