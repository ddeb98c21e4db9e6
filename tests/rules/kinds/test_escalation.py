"""Escalation: severity steps by value, count, duration and distance; never below the rule's own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rulekit import MIN, fire, make_pack, reading

from rules.engine import Engine
from rules.kinds.base import escalate
from rules.kinds.threshold import ThresholdRule
from rules.spec import Step


def _threshold(steps: str, *, op: str = ">", value: float = 30, severity: str = "medium") -> str:
    return f"""
- id: level
  kind: threshold
  title: Level
  category: flood
  severity: {severity}
  match: {{kind: reading, metric: m}}
  op: "{op}"
  value: {value}
  dedup: 1h
  escalate:
{steps}"""


def _severity(text: str, values: list[float], every: timedelta = MIN) -> str:
    [incident] = fire(make_pack(text), [reading(f"r{i}", i * every, v) for i, v in enumerate(values)])
    return incident.severity


@pytest.mark.parametrize(("value", "severity"), [(45, "medium"), (50, "high"), (79.9, "high"), (80, "critical")])
def test_value_steps_are_reached_at_their_value(value: float, severity: str) -> None:
    steps = "    - {severity: high, value: 50}\n    - {severity: critical, value: 80}\n"
    assert _severity(_threshold(steps), [value]) == severity


def test_for_a_below_rule_a_lower_value_is_worse() -> None:
    steps = "    - {severity: critical, value: 5}\n"
    text = _threshold(steps, op="<", value=10)
    assert _severity(text, [7]) == "medium"
    assert _severity(text, [5]) == "critical"


def test_count_and_after_steps_follow_the_repeats_on_the_open_incident() -> None:
    text = _threshold("    - {severity: high, count: 3}\n    - {severity: critical, after: 30m}\n")
    assert _severity(text, [40, 40]) == "medium"
    assert _severity(text, [40, 40, 40]) == "high"
    assert _severity(text, [40, 40], every=29 * MIN) == "medium"
    assert _severity(text, [40, 40], every=30 * MIN) == "critical"


def test_every_condition_of_one_step_must_hold() -> None:
    text = _threshold("    - {severity: critical, value: 50, count: 2}\n")
    assert _severity(text, [60]) == "medium"
    assert _severity(text, [40, 40]) == "medium"
    assert _severity(text, [40, 60]) == "critical"


def test_the_highest_step_that_holds_wins_whatever_the_order_and_never_below_the_rule() -> None:
    text = _threshold("    - {severity: critical, value: 50}\n    - {severity: high, value: 40}\n", severity="high")
    assert _severity(text, [45]) == "high"
    assert _severity(text, [55]) == "critical"
    lower = _threshold("    - {severity: low, value: 40}\n", severity="high")
    assert _severity(lower, [45]) == "high"


def test_escalate_with_a_distance_step() -> None:
    rule = ThresholdRule(id="r", title="t", category="c", kind="threshold", value=1, severity="low")
    steps = [Step(severity="high", within_m=250), Step(severity="critical", within_m=100)]
    assert escalate(rule, steps, value=1, count=1, duration_ms=0, distance_m=None) == "low"
    assert escalate(rule, steps, value=1, count=1, duration_ms=0, distance_m=300) == "low"
    assert escalate(rule, steps, value=1, count=1, duration_ms=0, distance_m=250) == "high"
    assert escalate(rule, steps, value=1, count=1, duration_ms=0, distance_m=100) == "critical"


def test_severity_rises_across_revisions_of_one_incident() -> None:
    text = _threshold("    - {severity: high, value: 50}\n")
    pack = make_pack(text)
    engine, state = Engine(pack), {}
    [first] = engine.process(engine.enrich([reading("a", timedelta(0), 40)]), state).incidents
    [second] = engine.process(engine.enrich([reading("b", MIN, 55)]), state).incidents
    assert (first.id, first.severity, first.revision) == (second.id, "medium", 1)
    assert (second.severity, second.revision) == ("high", 2)
