"""rules.spec: what a match takes, and whether two matches can take the same event."""

from __future__ import annotations

import pytest

from rules.spec import Match


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ({"kind": "reading", "metric": "m"}, {"kind": "reading", "metric": "m"}, True),
        ({"kind": "reading", "metric": "m"}, {"kind": "reading", "metric": "n"}, False),
        ({"kind": "reading", "metric": "m"}, {"kind": "reading"}, True),
        ({"kind": "reading"}, {"kind": "reading", "metric": "n"}, True),
        ({"kind": "reading", "metric": "m"}, {}, True),
        ({"kind": "reading", "metric": "m"}, {"kind": "report"}, False),
        ({"kind": "report", "categories": ["a", "b"]}, {"kind": "report", "category": "b"}, True),
        ({"kind": "report", "categories": ["a", "b"]}, {"kind": "report", "category": "c"}, False),
        ({"kind": "track", "object_type": "drone"}, {"object_type": "drone"}, True),
        ({"kind": "track", "object_type": "drone"}, {"kind": "track", "object_type": "robotaxi"}, False),
    ],
)
def test_two_matches_overlap_when_some_event_passes_both(
    a: dict[str, object], b: dict[str, object], overlap: bool
) -> None:
    assert Match.model_validate(a).overlaps(Match.model_validate(b)) is overlap
    assert Match.model_validate(b).overlaps(Match.model_validate(a)) is overlap
