"""The one builder of RFC 9457 problem documents, for the read API and HTTP ingest alike.

Every ``type`` is ``/problems/<kind>`` (a relative URI; docs/api.md lists the kinds), so a client tells
errors apart by one field whichever router answered.
"""

from __future__ import annotations

from typing import Any, Final

MEDIA_TYPE: Final = "application/problem+json"
TYPE_BASE: Final = "/problems/"


def document(
    status: int, kind: str, title: str, detail: str, instance: str | None = None, **extra: Any
) -> dict[str, Any]:
    """type, title, status, detail (and instance, then any extension members such as ``errors``)."""
    doc: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail}
    if instance is not None:
        doc["instance"] = instance
    doc.update(extra)
    return doc
