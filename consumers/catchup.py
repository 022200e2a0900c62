"""When ``leaderboard consume --until-caught-up`` is done: pure logic, no I/O.

The target is the topic's end offsets seen at start. A member is done when it owns at least one partition
and the group's committed offsets reached the target on every partition it owns. A lone member owns them
all, so it stops once everything published before it started is committed. With several members each stops
on its own partitions' progress; a member that owns nothing (more members than partitions) never is done
and ends by its timeout. Records published after the start are not waited for.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass


@dataclass(frozen=True)
class CatchUp:
    ends: Mapping[int, int]
    """End offset (next offset to be written) per partition, when the member started."""
    deadline: float | None = None
    """time.monotonic() after which the member gives up (None: no bound)."""

    def reached(self, owned: Set[int], committed: Mapping[int, int]) -> bool:
        """Whether the group committed up to the target on every owned partition (and one is owned).

        ``committed`` may lack a partition or hold a negative "no offset yet": both count as offset 0, which
        is enough for a partition that was empty at the start. A partition created after the start has no
        target and counts as reached.
        """
        return bool(owned) and all(max(0, committed.get(p, 0)) >= self.ends.get(p, 0) for p in owned)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def behind(self, owned: Set[int], committed: Mapping[int, int]) -> dict[int, tuple[int, int]]:
        """(committed, target) of each owned partition not yet at its target: what a timeout reports."""
        return {
            p: (max(0, committed.get(p, 0)), self.ends[p])
            for p in sorted(owned)
            if max(0, committed.get(p, 0)) < self.ends.get(p, 0)
        }
