"""Redis key names, in one place. The Lua scripts get the same grammar from :func:`lua_prelude` (generated
from the templates below and prepended when a script is loaded), so the two cannot drift.

Every key of a board shares the hash tag ``{board}`` so a board's scripts stay on one Redis Cluster slot.
A board's data lives in generations; ``meta.active`` says which one readers use (blue/green rebuilds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

BASE_KEYS: Final = {"meta": ":meta", "lock": ":lock", "closed": ":closed", "gen": ":g{gen}"}
"""Keys of a board: suffixes of its base ``<prefix>:{<board>}``."""
GEN_KEYS: Final = {
    "board": ":{period}",
    "watermark": ":wm:{period}",
    "stats": ":st:{period}",
    "latest": ":lt:{period}",
    "periods": ":periods",
    "position": ":hi",
    "floor": ":floor",
}
"""Keys of a generation: suffixes of its key ``<base>:g<gen>``."""


@dataclass(frozen=True)
class Keys:
    prefix: str = "lb"

    def base(self, board: str) -> str:
        return f"{self.prefix}:{{{board}}}"

    def meta(self, board: str) -> str:
        """Hash: active (generation readers use), writing (generations live consumers apply to)."""
        return self.base(board) + BASE_KEYS["meta"]

    def lock(self, board: str) -> str:
        """Held by whoever rebuilds the board (recovery or an operator)."""
        return self.base(board) + BASE_KEYS["lock"]

    def gen(self, board: str, gen: int) -> str:
        return self.base(board) + BASE_KEYS["gen"].format(gen=gen)

    def board(self, board: str, gen: int, period: str) -> str:
        """Sorted set: member player_id, score packed rank key + tie-break (leaderboard.aggregate)."""
        return self.gen(board, gen) + GEN_KEYS["board"].format(period=period)

    def watermark(self, board: str, gen: int, period: str) -> str:
        """Hash partition -> highest Kafka offset applied to that board-period."""
        return self.gen(board, gen) + GEN_KEYS["watermark"].format(period=period)

    def stats(self, board: str, gen: int, period: str) -> str:
        """Hash: events (applied count), updated_ms."""
        return self.gen(board, gen) + GEN_KEYS["stats"].format(period=period)

    def latest(self, board: str, gen: int, period: str) -> str:
        """Hash player -> "us:partition:offset" of the event a ``last`` board shows (the latest wins)."""
        return self.gen(board, gen) + GEN_KEYS["latest"].format(period=period)

    def periods(self, board: str, gen: int) -> str:
        """Set of period keys present in the generation."""
        return self.gen(board, gen) + GEN_KEYS["periods"]

    def position(self, board: str, gen: int) -> str:
        """Hash partition -> highest offset applied to any period of the generation."""
        return self.gen(board, gen) + GEN_KEYS["position"]

    def floor(self, board: str, gen: int) -> str:
        """Hash partition -> offset up to which a loaded snapshot already covers every period."""
        return self.gen(board, gen) + GEN_KEYS["floor"]

    def generation(self, board: str, gen: int, periods: Iterable[str], latest: bool = False) -> list[str]:
        """Every key of generation ``gen`` a script may touch for ``periods`` (``latest``: a ``last`` board's
        hashes too): what apply.lua and recompute.lua declare in KEYS."""
        out = [self.floor(board, gen), self.periods(board, gen), self.position(board, gen)]
        for period in periods:
            out += [
                self.board(board, gen, period),
                self.watermark(board, gen, period),
                self.stats(board, gen, period),
            ]
            if latest:
                out.append(self.latest(board, gen, period))
        return out

    def names(self) -> str:
        """Hash player_id -> latest display_name (shared by all boards)."""
        return f"{self.prefix}:names"

    def names_position(self) -> str:
        """Hash partition -> last offset of a batch whose names reached the names hash. Hash-tagged with the
        names hash's own name, so both share a slot (a names write lost by a failover is noticed)."""
        return f"{{{self.names()}}}:hi"

    def closed(self, board: str) -> str:
        """Set of period keys closed for good (mirror of PostgreSQL closed_periods)."""
        return self.base(board) + BASE_KEYS["closed"]


_FIELD = re.compile(r"\{(\w+)\}")


def _lua_concat(first: str, template: str) -> str:
    """A Lua expression: ``first`` followed by the template, its {fields} as Lua variables."""
    parts = [first]
    pos = 0
    for m in _FIELD.finditer(template):
        if m.start() > pos:
            parts.append(repr(template[pos : m.start()]))
        parts.append(f"tostring({m.group(1)})")
        pos = m.end()
    if pos < len(template):
        parts.append(repr(template[pos:]))
    return " .. ".join(parts)


def lua_prelude() -> str:
    """Lua functions ``key_<name>(base, ...)`` and ``gkey_<name>(g, ...)`` building the names above."""
    lines = ["-- generated by leaderboard.keys.lua_prelude: the key grammar of leaderboard.keys"]
    for name, template in BASE_KEYS.items():
        args = ", ".join(["base", *_FIELD.findall(template)])
        lines.append(f"local function key_{name}({args}) return {_lua_concat('base', template)} end")
    for name, template in GEN_KEYS.items():
        args = ", ".join(["g", *_FIELD.findall(template)])
        lines.append(f"local function gkey_{name}({args}) return {_lua_concat('g', template)} end")
    return "\n".join(lines) + "\n"
