"""Route matching, topic names and the default routes."""

from __future__ import annotations

import pytest
from alert_helpers import make
from pydantic import ValidationError

from sinks.alerts.errors import RouteError
from sinks.alerts.routes import Route, RouteTable, default_routes


def names(table: RouteTable, **changes: object) -> list[str]:
    return [r.name for r in table.route(make(**changes))]


def test_default_routes_all_flood_and_critical() -> None:
    table = RouteTable(default_routes(), "city")
    assert {r.name: (table.topic(r), r.format) for r in table.routes} == {
        "all": ("city.alerts.all", "json"),
        "flood": ("city.alerts.flood", "cloudevents-binary"),
        "critical": ("city.alerts.critical", "cap"),
    }
    assert names(table) == ["all", "flood", "critical"]  # flood, high
    assert names(table, severity="medium") == ["all", "flood"]
    assert names(table, category="air_quality", severity="medium") == ["all"]
    assert names(table, category="airspace", severity="critical") == ["all", "critical"]
    assert names(table, category="noise", severity="info") == ["all"]


@pytest.mark.parametrize(
    ("route", "matching", "not_matching"),
    [
        (dict(categories=["flood", "sanitation"]), dict(category="sanitation"), dict(category="noise")),
        (dict(min_severity="medium"), dict(severity="medium"), dict(severity="low")),
        (dict(min_severity="critical"), dict(severity="critical"), dict(severity="high")),
        (dict(zone_ids=["420102", "420103"]), dict(zone_id="420103"), dict(zone_id="420104")),
        (dict(zone_ids=["420102"]), dict(zone_id="420102"), dict(zone_id=None)),
        (dict(packs=["wuhan"]), dict(pack="wuhan"), dict(pack="nyc")),
    ],
)
def test_each_filter_accepts_and_rejects(
    route: dict[str, object], matching: dict[str, object], not_matching: dict[str, object]
) -> None:
    r = Route.model_validate({"name": "r", "topic": "t", **route})
    assert r.matches(make(**matching))
    assert not r.matches(make(**not_matching))


def test_filters_combine_with_and() -> None:
    r = Route(name="r", topic="t", categories=["flood"], min_severity="high", zone_ids=["420102"], packs=["wuhan"])
    assert r.matches(make())
    assert not r.matches(make(severity="medium"))
    assert not r.matches(make(zone_id="420103"))
    assert not r.matches(make(category="noise"))


def test_a_disabled_route_never_matches_and_has_no_topic_to_create() -> None:
    table = RouteTable([Route(name="a", topic="{prefix}.a"), Route(name="b", topic="{prefix}.b", enabled=False)], "p")
    assert names(table) == ["a"]
    assert table.enabled_topics() == ["p.a"]


def test_route_config_errors_are_reported() -> None:
    with pytest.raises(RouteError, match="duplicate route names \\['a'\\]"):
        RouteTable([Route(name="a", topic="x"), Route(name="a", topic="y")], "p")
    with pytest.raises(RouteError, match="more than one format"):
        RouteTable([Route(name="a", topic="x", format="cap"), Route(name="b", topic="x", format="json")], "p")
    with pytest.raises(ValidationError, match="topic"):
        Route(name="a", topic="bad topic")
    with pytest.raises(ValidationError, match="format"):
        Route.model_validate({"name": "a", "topic": "x", "format": "xml"})
    with pytest.raises(ValidationError):
        Route.model_validate({"name": "a", "topic": "x", "min_severity": "urgent"})
    with pytest.raises(ValidationError, match="extra"):
        Route.model_validate({"name": "a", "topic": "x", "category": ["flood"]})  # typo: categories
