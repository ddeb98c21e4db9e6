"""One module per rule kind: the rule's schema and its evaluator side by side."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from rules.kinds.base import Kind, PackContext
from rules.kinds.cluster import Cluster, ClusterRule
from rules.kinds.correlation import Correlation, CorrelationRule
from rules.kinds.geofence import Geofence, GeofenceRule
from rules.kinds.proximity import Proximity, ProximityRule
from rules.kinds.silence import Silence, SilenceRule
from rules.kinds.sustained import Sustained, SustainedRule
from rules.kinds.threshold import Threshold, ThresholdRule
from rules.kinds.window import Window, WindowRule

Rule = Annotated[
    ThresholdRule
    | WindowRule
    | SustainedRule
    | ClusterRule
    | GeofenceRule
    | ProximityRule
    | CorrelationRule
    | SilenceRule,
    Field(discriminator="kind"),
]
KIND_NAMES: tuple[str, ...] = (
    "threshold",
    "window",
    "sustained",
    "cluster",
    "geofence",
    "proximity",
    "correlation",
    "silence",
)

_EVALUATORS: dict[type, type[Kind]] = {
    ThresholdRule: Threshold,
    WindowRule: Window,
    SustainedRule: Sustained,
    ClusterRule: Cluster,
    GeofenceRule: Geofence,
    ProximityRule: Proximity,
    CorrelationRule: Correlation,
    SilenceRule: Silence,
}


def evaluator(rule: Any, ctx: PackContext) -> Kind:
    """The evaluator for one rule."""
    return _EVALUATORS[type(rule)](rule, ctx)


__all__ = ["KIND_NAMES", "Kind", "PackContext", "Rule", "evaluator"]
