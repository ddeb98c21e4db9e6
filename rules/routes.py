"""Route keys: what the events topic is partitioned by (``rules.pipeline.partition_for``).

Events go to the partition of their zone in the routing layer (the pack's first layer), tracks to
that of their moving object. Rule kinds use the same keys to tell which partition owns an incident
(``Scope.owned``), so this module sits below both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OUTSIDE = "_outside"


def routing_layer(layers: Mapping[str, Any]) -> str | None:
    """The layer events are routed by: the pack's first."""
    return next(iter(layers), None)


def zone_route(zone: str | None) -> str:
    """The route key of an event in ``zone`` of the routing layer (or in none of its zones)."""
    return f"zone:{zone or OUTSIDE}"


def object_route(subject: str) -> str:
    """The route key of a track of the moving object ``subject``: all of its track stays in one partition."""
    return f"obj:{subject}"
