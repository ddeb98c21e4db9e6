"""`cityops demo` (what `make demo` runs): every process starts, incidents reach the store, and all stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers signal 0: only a process that is not one counts
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][:1] != "Z"


def test_the_headless_demo_detects_incidents_and_stops_every_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")}  # the demo's own defaults
    argv = ["demo", "--headless", "--duration", "40", "--speed", "4", "--run-dir", str(run_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    # the broker, the store writer, a worker, the alerts process and the HTTP gateway (reports come through it)
    started = dict(re.findall(r"started name=(\S+) pid=(\d+)", output))
    assert {"store", "worker-1", "alerts", "gateway"} <= set(started), output[-4000:]
    broker = re.search(r"broker ready bootstrap=\S+ pid=(\d+)", output)
    assert broker is not None, output[-4000:]
    pids = [int(p) for p in started.values()] + [int(broker[1])]

    summary = re.search(r"summary: events in=(\d+) incidents=(\d+) open=(\d+) dead letters=(\d+)", output)
    assert summary is not None, output[-4000:]
    events, incidents = int(summary[1]), int(summary[2])
    assert events > 0 and incidents > 0, summary[0]
    assert "stopped every process" in output
    assert not [pid for pid in pids if _alive(pid)], "a demo process outlived the demo"

    # the store is a real DuckDB file, closed by its writer, holding at least what the summary counted
    # (the summary is read just before the processes stop; the writer may store a little more meanwhile)
    with duckdb.connect(str(run_dir / "cityops.duckdb"), read_only=True) as db:
        stored = db.execute("SELECT count(*), count(DISTINCT id) FROM incidents").fetchone()
        archived = db.execute("SELECT count(*) FROM events").fetchone()
    assert stored is not None and stored[0] >= incidents and stored[0] == stored[1]
    assert archived is not None and archived[0] >= events
