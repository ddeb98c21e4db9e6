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
        and (exp.status is None or exp.status == inc.status)
    )


def _differences(exp: ExpectedIncident, inc: Incident) -> str:
    """What an incident of the expected rule has where the expectation says otherwise."""
    got = {
        "subject": inc.subject,
        "zone_id": inc.zone_id,
        "count": inc.evidence.count,
        "severity": inc.severity,
        "status": inc.status,
    }
    wanted = exp.model_dump(exclude_none=True, exclude={"rule"})
    return ", ".join(f"{name} {got[name]!r}" for name, value in wanted.items() if got[name] != value)


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
        missing = []
        for exp in case.expect:
            hit = next((inc for inc in unmatched if _matches(exp, inc)), None)
            if hit is None:
                missing.append(exp)
            else:
                unmatched.remove(hit)
        # an expectation its rule's incident nearly meets: say what differs, rather than "did not
        # fire" plus an "unexpected incident" that is the same one
        for exp in missing:
            near = next((inc for inc in unmatched if inc.rule_id == exp.rule), None)
            if near is None:
                problems.append(f"expected {exp.model_dump(exclude_none=True)} but it did not fire")
            else:
                unmatched.remove(near)
                problems.append(
                    f"expected {exp.model_dump(exclude_none=True)} but its incident has {_differences(exp, near)}"
                )
        for inc in unmatched:
            problems.append(
                f"unexpected incident rule={inc.rule_id} subject={inc.subject} zone_id={inc.zone_id} "
                f"count={inc.evidence.count} severity={inc.severity} status={inc.status}"
            )
        results.append(CaseResult(case.name, not problems, problems))
    return results


def untested_rules(pack: LoadedPack) -> list[str]:
    """Rule ids that no test case expects to fire."""
    tested = {exp.rule for case in pack.spec.tests for exp in case.expect}
    return [r.id for r in pack.spec.rules if r.id not in tested]
