"""Pure rank math shared by the read API (Redis and PostgreSQL paths) and its tests.

Competition ranking ("1224"): a player's rank is one plus the number of players with strictly more points.
Redis gives the rank of one row in O(log n) (ZCOUNT of higher packed scores); the ranks of the rest of a
page follow from the page itself, so a page costs one ZCOUNT whatever its length. ``read_around.lua``
repeats :func:`window` in Lua; keep them in step.
"""

from __future__ import annotations

from collections.abc import Sequence


def page_ranks(points: Sequence[int], first_rank: int, start: int) -> list[int]:
    """Competition ranks of a page of rows in board order.

    ``points`` are the rows' points (descending), ``first_rank`` the rank of the first row and ``start``
    its 0-based position on the board. A row tied with the one before shares its rank; otherwise its rank
    is its 1-based position, because every row above it has strictly more points.
    """
    ranks: list[int] = []
    prev: int | None = None
    for i, pts in enumerate(points):
        if i == 0:
            rank = first_rank
        elif pts == prev:
            rank = ranks[-1]
        else:
            rank = start + i + 1
        ranks.append(rank)
        prev = pts
    return ranks


def percentile(below: int, total: int) -> float:
    """Share of the board's players with strictly fewer points, in percent (0 for a board of one)."""
    if total <= 0:
        return 0.0
    return round(100.0 * below / total, 2)


def window(index: int, size: int, radius: int) -> tuple[int, int]:
    """Inclusive [first, last] positions of the rows around ``index`` on a board of ``size`` rows.

    Up to ``radius`` rows on each side; at the top and bottom edges the window is filled from the other side,
    so it always holds ``min(2 * radius + 1, size)`` rows and contains ``index``.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} outside a board of {size}")
    if radius < 0:
        raise ValueError("radius must be >= 0")
    count = min(2 * radius + 1, size)
    first = max(0, min(index - radius, size - count))
    return first, first + count - 1
