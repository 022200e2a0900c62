"""Owned partitions whose committed offsets the member cannot read: seen, counted as waiting, and cleared.

A read_committed member fetches each assigned partition's committed offset as a stable read (KIP-447) and
fetches no record from it until that offset is stable. After a broker restart, offsets that a transaction
of ours left pending in the group coordinator (a replaced producer's late TxnOffsetCommit, after its
transaction was aborted: KIP-890's "hanging transactions") are resolved by nothing: the partition stays
silent, with no position and so no lag to see. Between batches the loop therefore probes the partitions that
have had no position for ``PROBE_AFTER_S``: their committed offset (the same stable read, bounded) and their
watermarks. One whose committed offset cannot be read counts as waiting, so the watchdog reports the member
not-ready within its bound; after ``CLEAR_AFTER`` such probes the member aborts an empty transaction holding
offsets of those partitions: the abort marker it writes to the group's offsets partition drops every offset
pending under the member's producer id (ADR 0011). A batch whose failed commit is being rechecked meets the
same wall in its read of the committed offsets; the batch loop clears the same way there (``clear_due``).

``plan`` and ``Probes`` are pure; the processor does the Kafka calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBE_AFTER_S = 4.0
"""No position this long after assignment: probe (a healthy fetch positions a partition with records at
once; an idle one stays unpositioned and its probe answers at once too)."""
PROBE_TIMEOUT_S = 2.0
CLEAR_AFTER = 3
"""Consecutive unreadable probes of a partition before the member writes its abort marker."""
CLEAR_EVERY_S = 10.0


def plan(owned_at: dict[int, float], positions: dict[int, int], now: float) -> list[int]:
    """Owned partitions to probe: owned for PROBE_AFTER_S and still without a position."""
    return sorted(
        p for p, since in owned_at.items() if positions.get(p, -1) < 0 and now - since >= PROBE_AFTER_S
    )


@dataclass
class Probes:
    """Per partition unreadable in a row: since when and how many probes; and the last clearing attempt."""

    unreadable: dict[int, tuple[float, int]] = field(default_factory=dict)
    cleared_at: float = float("-inf")

    def record(self, now: float, readable: set[int], unreadable: set[int]) -> None:
        for p in readable:
            self.unreadable.pop(p, None)
        for p in unreadable:
            since, n = self.unreadable.get(p, (now, 0))
            self.unreadable[p] = (since, n + 1)

    def forget(self, partitions: set[int]) -> None:
        """Partitions no longer owned, or positioned again."""
        for p in partitions:
            self.unreadable.pop(p, None)

    def stuck(self, now: float, bound: float) -> list[int]:
        """Partitions unreadable for longer than ``bound``: the member is not ready while there are any
        (its other partitions may well be committing)."""
        return sorted(p for p, (since, _) in self.unreadable.items() if now - since > bound)

    def to_clear(self, now: float) -> list[int]:
        """Partitions unreadable CLEAR_AFTER probes in a row, once per CLEAR_EVERY_S; marks the attempt."""
        due = sorted(p for p, (_, n) in self.unreadable.items() if n >= CLEAR_AFTER)
        return due if due and self.clear_due(now) else []

    def clear_due(self, now: float) -> bool:
        """Whether a clearing attempt may run now (at most one per CLEAR_EVERY_S); marks it when so. The
        batch loop asks this when a failed commit's recheck cannot read the batch's committed offsets."""
        if now - self.cleared_at < CLEAR_EVERY_S:
            return False
        self.cleared_at = now
        return True
