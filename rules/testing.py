"""Pack tests in the manner of ``promtool test rules``: events in, exact incidents out."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from rules.decode import decode_one
from rules.model import Incident
from rules.pack import ExpectedIncident, LoadedPack
from rules.replay import replay_events


@dataclass(frozen=True)
class CaseResult:
    name: str
    ok: bool
    problems: list[str]


def _matches(exp: ExpectedIncident, inc: Incident) -> bool:
    return (
        exp.rule == inc.rule_id
        and (exp.subject is None or exp.subject == inc.subject)
        and (exp.zone_id is None or exp.zone_id == inc.zone_id)
        and (exp.count is None or exp.count == inc.evidence.count)
        and (exp.severity is None or exp.severity == inc.severity)
    )


def run_pack_tests(pack: LoadedPack) -> list[CaseResult]:
    """Run every test case of a pack; each case must produce exactly the expected incidents."""
    results = []
    for case in pack.spec.tests:
        problems: list[str] = []
        events = []
        for i, raw in enumerate(case.events):
            try:
                events.append(decode_one(raw))
            except ValidationError as exc:
                problems.append(f"event #{i} is invalid: {exc.errors()[0]['msg']}")
        got = replay_events(pack, events) if not problems else []
        unmatched = list(got)
        for exp in case.expect:
            hit = next((inc for inc in unmatched if _matches(exp, inc)), None)
            if hit is None:
                problems.append(f"expected {exp.model_dump(exclude_none=True)} but it did not fire")
            else:
                unmatched.remove(hit)
        for inc in unmatched:
            problems.append(f"unexpected incident rule={inc.rule_id} subject={inc.subject} count={inc.evidence.count}")
        results.append(CaseResult(case.name, not problems, problems))
    return results


def untested_rules(pack: LoadedPack) -> list[str]:
    """Rule ids that no test case expects to fire."""
    tested = {exp.rule for case in pack.spec.tests for exp in case.expect}
    return [r.id for r in pack.spec.rules if r.id not in tested]
