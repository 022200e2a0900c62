"""The Lua scripts shipped with the package, loaded by name."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def source(name: str) -> str:
    return resources.files("leaderboard").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
