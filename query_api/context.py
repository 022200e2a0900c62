"""Per-app state the handlers share: boards, the store, and period resolution."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request

from leaderboard import periods
from leaderboard.boards import Board
from leaderboard.periods import PeriodKind
from query_api.problems import Problem
from query_api.store import Store

_RESOLVE_TTL_S = 1.0


def default_spec(board: Board) -> str:
    """monthly:current, or the current period of the board's first kind when it keeps no monthly one."""
    kind = PeriodKind.MONTHLY if PeriodKind.MONTHLY in board.periods else board.periods[0]
    return periods.ALL_TIME if kind is PeriodKind.ALL_TIME else f"{kind}:current"


def current_keys(board: Board, now: datetime | None = None) -> dict[str, str]:
    return board.current_keys(now or datetime.now(UTC))


@dataclass
class Context:
    boards: dict[str, Board]
    store: Store
    _resolved: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, boards: Sequence[Board], store: Store) -> Context:
        return cls({b.id: b for b in boards}, store)

    def forget_resolved(self) -> None:
        """Drop cached period resolutions (the boards were reloaded: a board's periods may differ)."""
        self._resolved = {}

    def board(self, board_id: str) -> Board:
        board = self.boards.get(board_id)
        if board is None:
            known = ", ".join(sorted(self.boards))
            raise Problem(404, "unknown-board", f"no board {board_id!r}; boards: {known}")
        return board

    def period(self, board: Board, spec: str | None) -> str:
        """Resolve an API period spec to a key the board keeps; 400 with the grammar otherwise.

        ``:current`` answers are cached for a second (the boundary may be seen up to 1 s late).
        """
        text = default_spec(board) if spec is None else spec
        now_mono = time.monotonic()
        hit = self._resolved.get((board.id, text))
        if hit is not None and hit[0] > now_mono:
            return hit[1]
        try:
            key = board.resolve(text, datetime.now(UTC))
            kind = None if board.season(key) is not None else periods.kind_of(key)
        except periods.PeriodError as exc:
            message = str(exc)
            if periods.GRAMMAR not in message:
                message = f"{message}; {periods.GRAMMAR}"
            raise Problem(400, "invalid-period", f"invalid period {text!r}: {message}") from exc
        if kind is not None and kind not in board.periods:
            kept = ", ".join(str(k) for k in board.periods)
            raise Problem(
                400, "invalid-period", f"board {board.id!r} keeps no {kind} periods; it keeps: {kept}"
            )
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[(board.id, text)] = (now_mono + _RESOLVE_TTL_S, key)
        return key


def ctx(request: Request) -> Context:
    context: Context = request.app.state.ctx
    return context
