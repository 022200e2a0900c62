"""Redis key names, in one place. ``lua/apply.lua`` builds the same names from the base; keep in step.

Every key of a board shares the hash tag ``{board}`` so a board's scripts stay on one Redis Cluster slot.
A board's data lives in generations; ``meta.active`` says which one readers use (blue/green rebuilds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "lb"

    def base(self, board: str) -> str:
        return f"{self.prefix}:{{{board}}}"

    def meta(self, board: str) -> str:
        """Hash: active (generation readers use), writing (generations live consumers apply to)."""
        return f"{self.base(board)}:meta"

    def lock(self, board: str) -> str:
        """Held by whoever rebuilds the board (recovery or an operator)."""
        return f"{self.base(board)}:lock"

    def gen(self, board: str, gen: int) -> str:
        return f"{self.base(board)}:g{gen}"

    def board(self, board: str, gen: int, period: str) -> str:
        """Sorted set: member player_id, score packed points + tie-break (leaderboard.scoring)."""
        return f"{self.gen(board, gen)}:{period}"

    def watermark(self, board: str, gen: int, period: str) -> str:
        """Hash partition -> highest Kafka offset applied to that board-period."""
        return f"{self.gen(board, gen)}:wm:{period}"

    def stats(self, board: str, gen: int, period: str) -> str:
        """Hash: events (applied count), updated_ms."""
        return f"{self.gen(board, gen)}:st:{period}"

    def periods(self, board: str, gen: int) -> str:
        """Set of period keys present in the generation."""
        return f"{self.gen(board, gen)}:periods"

    def position(self, board: str, gen: int) -> str:
        """Hash partition -> highest offset applied to any period of the generation."""
        return f"{self.gen(board, gen)}:hi"

    def floor(self, board: str, gen: int) -> str:
        """Hash partition -> offset up to which a loaded snapshot already covers every period."""
        return f"{self.gen(board, gen)}:floor"

    def names(self) -> str:
        """Hash player_id -> latest display_name (shared by all boards)."""
        return f"{self.prefix}:names"

    def names_position(self) -> str:
        """Hash partition -> last offset of a batch whose names reached the names hash. Hash-tagged with the
        names hash's own name, so both share a slot (a names write lost by a failover is noticed)."""
        return f"{{{self.names()}}}:hi"

    def closed(self, board: str) -> str:
        """Set of period keys closed for good (mirror of PostgreSQL closed_periods)."""
        return f"{self.base(board)}:closed"
