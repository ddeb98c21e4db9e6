"""Source keys keep one subject's events under one key, whatever the batch."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.sources import by_source, source_key


def test_a_key_is_crc32_of_the_subject_mod_the_groups() -> None:
    assert source_key("wl-1", 4) == b"src-%d" % (zlib.crc32(b"wl-1") % 4)
    assert source_key("anything", 1) == b"src-0"


def test_zero_groups_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        source_key("wl-1", 0)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers()), max_size=60), st.integers(1, 8))
def test_groups_keep_each_subjects_order_and_lose_nothing(items: list[tuple[str, int]], groups: int) -> None:
    out = by_source(items, lambda i: i[0], groups)
    assert len(out) <= groups
    assert sorted(i for _, g in out for i in g) == sorted(items)
    for key, group in out:
        assert {source_key(s, groups) for s, _ in group} == {key}
    for subject in {s for s, _ in items}:
        [(_, group)] = [(k, g) for k, g in out if any(s == subject for s, _ in g)]
        assert [i for i in group if i[0] == subject] == [i for i in items if i[0] == subject]
