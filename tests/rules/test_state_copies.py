"""Copy-on-touch: a batch changes private copies of entries; a stored entry changes only by replacement.

Each kind copies its entries its own way (``Scope.get``/``load`` take a copier that copies only what
the kind changes in place). If one forgot a container, a later batch would change an entry object
that is already in the state: a checkpoint being cut, or a batch that raises halfway, would then
see half-applied state. This runs every rule kind of the Wuhan pack and checks that no entry object
of the state is ever changed after it was stored.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from rules.engine import Engine
from rules.pack import load_pack
from rules.pipeline import Pipeline
from streams.bench_data import wuhan_events
from streams.scenario import scenario_events, wuhan_scenario
from streams.settings import default_pack

START = datetime.fromisoformat("2026-07-01T23:00:00+08:00")  # night: the noise schedule is live


@pytest.mark.parametrize(
    ("handoff", "cooled"), [(0, False), (10_000, False), (0, True)], ids=["parsed", "handoff", "cooldown"]
)
def test_no_stored_entry_is_changed_in_place_by_a_later_batch(handoff: int, cooled: bool) -> None:
    """Also through the handoff, where detect shares the event objects and zone lists ingest made,
    and with a cooldown and auto-resolve on every rule (``rules.cooldown``'s entries)."""
    pack = load_pack(default_pack())
    if cooled:
        extra = {"cooldown": timedelta(minutes=30), "auto_resolve": timedelta(minutes=5)}
        rules = [r.model_copy(update=extra) for r in pack.spec.rules]
        pack = replace(pack, spec=pack.spec.model_copy(update={"rules": rules}))
    pipeline = Pipeline(Engine(pack), partitions=1, handoff=handoff)
    # the scripted scenario fires every rule kind (episodes that grow across batches); the crowd adds volume
    scripted = scenario_events(
        wuhan_scenario(pack.layers["districts"], START, 600.0, bad_records=False, extra_layers=pack.layers)
    )
    events = sorted([*scripted, *wuhan_events(3000, seed=3)], key=lambda e: str(e["ts"]))
    state: dict[str, Any] = {}
    seen: dict[int, tuple[str, Any, Any]] = {}  # id -> key, the stored object, a deep copy of it when stored
    kinds: set[str] = set()
    for offset, start in enumerate(range(0, len(events), 60)):
        raw = orjson.dumps({"events": events[start : start + 60]})
        out = pipeline.ingest(raw, "raw", 0, offset)
        for part in out.targets():
            envelope = out.envelope(part, (0, offset))
            pipeline.handoff.keep(envelope, out, part, (0, offset), None)
            pipeline.detect(envelope, state, "events", part, offset)
        if cooled:  # auto-resolve at ticks, which change chains too
            pipeline.engine.tick(state)
        for key, value in state.items():
            if isinstance(value, dict) and id(value) not in seen:  # the object is kept: its id stays its own
                seen[id(value)] = (key, value, copy.deepcopy(value))
                kinds.add(key.split("@")[0].removeprefix("cool:"))
        for key, stored, frozen in seen.values():
            assert stored == frozen, f"entry {key} was changed in place after it was stored"
    rules = {r.id for r in pack.spec.rules}
    assert len(kinds & rules) >= 10, f"most rule kinds made entries: {sorted(kinds & rules)}"
    if cooled:
        chains = [v for k, v in state.items() if k.startswith("cool:") and "|c|" in k]
        assert any(int(c["k"]) > 1 for c in chains) and any(c.get("auto") for c in chains)
