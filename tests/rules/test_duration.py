"""Durations as rule authors write them: parse_duration, format_duration and the pydantic type."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from rules.duration import Duration, format_duration, parse_duration

MAX_MS = timedelta(days=999_999_999) // timedelta(milliseconds=1)


class _Holder(BaseModel):
    every: Duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(minutes=90)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("90m", timedelta(minutes=90)),
        (" 1h 30m ", timedelta(minutes=90)),
        ("30m1h", timedelta(minutes=90)),
    ],
)
def test_parse_duration_reads_units_and_combinations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(minutes=90), "1h30m"),
        (timedelta(weeks=1), "7d"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_writes_the_canonical_form(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(ms=st.integers(min_value=1, max_value=MAX_MS))
@settings(max_examples=200, deadline=None)
def test_format_then_parse_gives_back_the_same_duration(ms: int) -> None:
    value = timedelta(milliseconds=ms)
    assert parse_duration(format_duration(value)) == value


@given(parts=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["ms", "s", "m", "h", "d", "w"])), min_size=1))
@settings(max_examples=200, deadline=None)
def test_parse_then_format_is_canonical_and_stable(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert all(n == 0 for n, _ in parts), exc
        return
    canonical = format_duration(value)
    assert parse_duration(canonical) == value
    assert format_duration(parse_duration(canonical)) == canonical


@given(text=st.text(max_size=30) | st.from_regex(r"\A[0-9]{1,25}(ms|s|m|h|d|w|x)?\Z"))
@settings(max_examples=200, deadline=None)
def test_any_text_gives_a_positive_duration_or_a_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        assert repr(text) in str(exc)
        return
    assert value > timedelta(0)


@pytest.mark.parametrize("text", ["90x", "", "   ", "h", "1.5h", "-5m", "15 minutes", "1h30", "m15", "PT15M"])
def test_text_that_is_not_a_duration_says_so_with_an_example(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"{text!r} is not a duration (e.g. '30s', '15m', '1h30m', '2d')"


@pytest.mark.parametrize("text", ["0s", "0ms", "0h0m"])
def test_a_zero_duration_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="must be longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["90", "15"])
def test_a_bare_number_string_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_a_duration_too_long_for_timedelta_is_a_value_error() -> None:
    assert parse_duration("999999999d") == timedelta(days=999_999_999)
    with pytest.raises(ValueError, match="is too long"):
        parse_duration("1000000000d")
    with pytest.raises(ValueError, match="is too long"):
        parse_duration("99999999999999999999ms")


@pytest.mark.parametrize(("raw", "hint"), [(90, "'90s'"), (1.5, "'1s'"), (0, "'0s'")])
def test_a_bare_number_in_a_model_says_it_needs_a_unit(raw: float, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        _Holder(every=raw)
    message = info.value.errors()[0]["msg"]
    assert message == f"Value error, {raw!r} has no unit: write it as a duration such as {hint} or '15m'"


def test_the_model_type_parses_text_and_serialises_back_to_text() -> None:
    holder = _Holder(every="1h30m")
    assert holder.every == timedelta(minutes=90)
    assert holder.model_dump(mode="json") == {"every": "1h30m"}
    assert holder.model_dump() == {"every": timedelta(minutes=90)}


def test_the_json_schema_describes_the_text_form_not_iso_8601() -> None:
    schema = _Holder.model_json_schema()["properties"]["every"]
    assert schema["type"] == "string"
    assert "format" not in schema
    assert schema["examples"][:3] == ["30s", "15m", "1h30m"]
