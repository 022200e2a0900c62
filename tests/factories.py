"""Small builders shared by tests (no I/O)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from schemas.model import MatchWon


def win(
    player: str,
    at: datetime | str = "2026-11-28T10:00:00Z",
    points: int = 1,
    *,
    game: str = "chess",
    mode: str | None = None,
    region: str | None = None,
    event_id: str | None = None,
    display_name: str | None = None,
) -> MatchWon:
    when = datetime.fromisoformat(at.replace("Z", "+00:00")) if isinstance(at, str) else at
    return MatchWon(
        event_id=event_id or str(uuid.uuid4()),
        match_id=f"m-{uuid.uuid4().hex[:8]}",
        player_id=player,
        game=game,
        mode=mode,
        region=region,
        points=points,
        occurred_at=when.astimezone(UTC),
        display_name=display_name,
    )
