"""rules.fields: the fields of each event kind, as rules read them."""

from __future__ import annotations

import pytest

from rules.columns import NUMERIC
from rules.fields import ALL_FIELDS, NUMERIC_FIELDS, field_problem
from rules.spec import Match


def test_numeric_fields_come_from_the_event_models() -> None:
    assert {
        "reading": {"value", "lon", "lat"},
        "report": {"lon", "lat"},
        "track": {"alt_m", "speed_mps", "heading", "lon", "lat"},
    } == NUMERIC_FIELDS


def test_every_numeric_field_is_a_column_of_a_batch() -> None:
    # the columnar engine carries NUMERIC; a numeric field it lacked would be read event by event
    assert set().union(*NUMERIC_FIELDS.values()) == set(NUMERIC)


def test_any_field_and_the_subject_can_be_counted() -> None:
    assert {"subject", "sensor_id", "unit"} <= ALL_FIELDS["reading"]
    assert "category" not in ALL_FIELDS["reading"]
    assert {"subject", "category", "channel"} <= ALL_FIELDS["report"]


def test_a_field_is_fine_when_some_of_the_kinds_have_it() -> None:
    assert field_problem("alt_m", ["reading", "track"]) is None
    assert field_problem("alt_m", ["reading"]) == (
        "reads numeric field 'alt_m', which its readings do not have (theirs: lat, lon, value)"
    )
    assert field_problem("unit", ["reading"]) is not None  # a text field is not a number
    assert field_problem("unit", ["reading"], numeric=False) is None


@pytest.mark.parametrize(
    ("match", "kinds"),
    [
        ({}, ("reading", "report", "track")),
        ({"metric": "pm25"}, ("reading",)),
        ({"categories": ["noise"]}, ("report",)),
        ({"object_type": "drone"}, ("track",)),
        ({"kind": "track", "zones": ["z1"]}, ("track",)),
        ({"kind": "reading", "category": "noise"}, ()),
        ({"metric": "pm25", "object_type": "drone"}, ()),
        ({"category": "noise", "categories": ["dumping"]}, ()),
        ({"category": "noise", "categories": ["dumping", "noise"]}, ("report",)),
    ],
)
def test_a_match_takes_the_kinds_its_filters_allow(match: dict[str, object], kinds: tuple[str, ...]) -> None:
    assert Match.model_validate(match).kinds() == kinds
