"""`cityops bench`: every phase reports, incidents equal replay, and no child process outlives it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from rules.pack import load_pack
from rules.replay import replay
from streams import bench_data
from streams.bench import run_bench
from streams.bench_data import BenchError
from streams.bench_phases import BenchOptions, percentiles
from streams.settings import Settings, default_pack

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True while a process of the benchmark with this pid runs (not a zombie, not a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    ours = b"streams" in cmdline or b"tansu" in cmdline
    return ours and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _bench(args: list[str], tmp_path: Path, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "bench", "--run-dir", str(tmp_path / "run"), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")},
        **kw,  # type: ignore[call-overload]
    )


def test_markers_cover_every_partition_and_each_opens_its_own_incident() -> None:
    pack = load_pack(default_pack())
    body = bench_data.wuhan_events(500)
    at = bench_data.START + timedelta(milliseconds=len(body) * bench_data.STEP_MS)
    marks = bench_data.markers(pack, 4, at, (114.3, 30.6))
    assert len(marks) == 4
    incidents = replay(pack, [orjson.dumps(e) for e in body + marks]).incidents
    opened_by = {i.evidence.event_ids[0] for i in incidents if i.revision == 1}
    assert {m["id"] for m in marks} <= opened_by


def test_grid_pack_has_the_requested_zones_and_rules(tmp_path: Path) -> None:
    pack = load_pack(bench_data.write_grid_pack(tmp_path, 100, 20))
    assert len(pack.layers["grid"].ids) == 100
    assert len(pack.spec.rules) == 20
    assert bench_data.probe_rule(pack).object_type == "drone"
    assert replay(pack, [orjson.dumps(e) for e in bench_data.grid_events(2000)]).rejected == []


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    got = percentiles([i / 1000 for i in range(1, 101)])
    assert got == {"samples": 100, "p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert percentiles([])["p99_ms"] is None


def test_bench_refuses_to_wipe_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BenchError, match=r"notes\.txt"):
        run_bench(Settings(), BenchOptions(events=10, run_dir=tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.integration
def test_small_bench_reports_every_phase_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench(["--events", "3000", "--latency-seconds", "3", "--json", str(out)], tmp_path)
    stdout, stderr = proc.communicate(timeout=540)
    assert proc.returncode == 0, stderr[-4000:]
    doc = json.loads(stdout)
    assert json.loads(out.read_text()) == doc
    for phase in ("raw_aiokafka", "naive_faust", "cityops"):
        assert doc["events_per_s"][phase] > 0
        assert doc["phases"][phase]["events_per_s"] == doc["events_per_s"][phase]
    assert doc["ratios"]["cityops_vs_naive"] > 0
    assert doc["config"]["events"] == 3000
    stages = doc["in_process"]["worker_stages"]
    assert stages["ingest_events_per_s"] > 0 and stages["detect_events_per_s"] > 0
    # both stages in one process cannot beat the slower of them alone
    assert stages["worker_events_per_s"] <= min(stages["ingest_events_per_s"], stages["detect_events_per_s"])
    assert stages["incidents_equal_replay"], "the stages over partitions with the handoff give replay's incidents"
    incidents = doc["incidents"]
    assert incidents["replay"] > 0
    assert incidents["cityops"] == incidents["replay"] and incidents["cityops_equal_replay"]
    assert incidents["naive_faust"] == incidents["replay"]
    assert doc["phases"]["cityops"]["markers_cover_partitions"]
    for target in ("event_to_incident", "event_to_alert"):
        lat = doc["latency"][target]
        assert lat["samples"] > 0
        assert lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert len(doc["pids"]) == 5  # broker, naive agent, worker, live worker, alerts
    assert not [pid for pid in doc["pids"] if _alive(pid)]


@pytest.mark.integration
def test_repeat_runs_the_throughput_phases_in_rounds_and_reports_their_medians(tmp_path: Path) -> None:
    proc = _bench(["--events", "2000", "--latency-seconds", "0", "--repeat", "3"], tmp_path)
    stdout, stderr = proc.communicate(timeout=540)
    assert proc.returncode == 0, stderr[-4000:]
    doc = json.loads(stdout)
    assert doc["config"]["rounds"] == 3 and len(doc["rounds"]) == 3
    for phase in ("raw_aiokafka", "naive_faust", "cityops"):
        rates = [r[phase] for r in doc["rounds"]]
        assert doc["phases"][phase]["rounds_events_per_s"] == rates
        assert doc["events_per_s"][phase] == sorted(rates)[1] > 0  # the median round
    for r in doc["rounds"]:
        assert r["cityops_vs_naive"] == round(r["cityops"] / r["naive_faust"], 2)
    assert doc["ratios"]["cityops_vs_naive"] == round(
        doc["events_per_s"]["cityops"] / doc["events_per_s"]["naive_faust"], 2
    )
    assert doc["incidents"]["cityops_equal_replay"] and doc["incidents"]["naive_equal_replay"]
    assert doc["incidents"]["cityops"] == doc["incidents"]["replay"] > 0
    assert len(doc["pids"]) == 7  # the broker, and a naive agent and a worker per round
    assert not [pid for pid in doc["pids"] if _alive(pid)]
    assert "bench round 3 of 3" in stderr


@pytest.mark.integration
def test_sigterm_stops_every_child_process(tmp_path: Path) -> None:
    proc = _bench(["--events", "3000", "--latency-seconds", "0"], tmp_path)
    assert proc.stderr is not None
    pids: list[int] = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until the broker and the naive agent run
        pids += [int(p) for p in re.findall(r"pid=(\d+)", line)]
        if "started name=naive" in line or time.monotonic() > deadline:
            break
    assert len(pids) == 2, pids
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids if _alive(pid)}
    assert not left, stderr[-3000:]
