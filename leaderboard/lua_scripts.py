"""The Lua scripts shipped with the package, loaded by name, behind a generated prelude.

The prelude carries the score encoding (leaderboard.scoring) and the key grammar (leaderboard.keys), so the
scripts never restate a constant or a key name of the Python side.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from leaderboard import keys, scoring


@cache
def source(name: str) -> str:
    """The text of one script file, as shipped."""
    return resources.files("leaderboard").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


@cache
def prelude() -> str:
    return scoring.lua_prelude() + keys.lua_prelude()


@cache
def script(*names: str) -> str:
    """The prelude and the named script files, in order: what is loaded into Redis."""
    return prelude() + "\n".join(source(n) for n in names)
