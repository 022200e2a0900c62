"""The one way an instant is written in a JSON body the service emits (read API, SSE, ingest).

RFC 3339 in UTC with millisecond precision and ``Z``, always the same width: ``2026-11-28T10:05:00.000Z``
(what JavaScript's ``Date.toISOString()`` writes). Sub-millisecond digits are cut, never rounded, so a
written instant never moves into the next second, day or period.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Final

PATTERN: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
"""What every written instant fully matches (tests scan responses with it)."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def utc(instant: datetime) -> str:
    """An aware datetime, written in UTC. A naive one raises: its zone would be a guess."""
    if instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant!r}: give a timezone")
    text = instant.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def utc_ms(epoch_ms: int) -> str:
    """Milliseconds since the Unix epoch (as Redis scripts record them), written in UTC; exact."""
    return utc(_EPOCH + timedelta(milliseconds=epoch_ms))
