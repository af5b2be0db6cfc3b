"""How a route is documented in openapi.json (``openapi.py`` builds the document): kept apart so
the route modules of their own (``catalogue.py``) can describe their routes beside them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOT_FOUND = "not_found"
INVALID = "invalid_field"


@dataclass(frozen=True)
class Route:
    """One route's documentation: what it takes, what it answers, what it refuses."""

    summary: str
    body: type | None
    answer: Any
    #: refusals by status: the ``error`` codes each may carry
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    #: the statuses of a success (a created member is 201)
    ok: tuple[int, ...] = (200,)
    query: tuple[tuple[str, dict[str, Any]], ...] = ()
    body_required: bool = False
    #: whether it reads a store (503 ``unavailable`` when one does not answer)
    stores: bool = True
    #: a body that is not one JSON document: its media types and their schemas (``body``,
    #: if given, is listed among the document's schemas)
    media: dict[str, dict[str, Any]] | None = None
    #: the media type of a success's body (a CSV file, an SVG chart)
    answer_media: str = "application/json"


__all__ = ["INVALID", "NOT_FOUND", "Route"]
