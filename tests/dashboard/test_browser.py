"""What a person sees, against a running stack: a real broker, the store writer and a worker as processes,
the Wuhan scenario sent through Kafka, and ``streamlit run dashboard/app.py`` on a free port with login on.

The browser script (``browser.mjs``) logs in, sees incidents on the map and in the queue, clicks one
on the map, acknowledges it and sees the new state; the test checks it in DuckDB (through the read
side), then sends a new event and the page shows the new incident through its live refresh; then the
language switches to English and every page renders. Screenshots go to ``artifacts/screenshots/``
(a CI artefact, not in git).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from conftest import REPO
from kafka import KafkaProducer
from pydantic import SecretStr
from stack import Stack, make_settings

from dashboard.maps import WUHAN_VIEW
from dashboard.passwords import hash_password
from rules.pack import load_pack
from streams.broker import DevBroker, free_port
from streams.scenario import wuhan_scenario
from streams.settings import DashboardUser
from streams.simulate import produce

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SCRIPT = Path(__file__).with_name("browser.mjs")
SHOTS = REPO / "artifacts" / "screenshots"
USER, PASSWORD = "zhang.san", "duty-officer-pw"
LATE_SUBJECT = "wl-late-0901"
TARGET_RULE = "flood.water-level-high"


def _stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace)


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60.0) -> None:
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode} while starting:\n{log.read_text()[-4000:]}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200 and resp.read().strip() == b"ok":
                return
        time.sleep(0.25)
    pytest.fail(f"streamlit did not answer {url} within {timeout:.0f}s:\n{log.read_text()[-4000:]}")


BUCKET = timedelta(minutes=15)  # the demo pack's dedup buckets (15 min, 30 min, 1 h) all start on these


def scenario_start(now: datetime) -> datetime:
    """Where the 120-s scenario starts: about 2.5 minutes ago, inside one 15-minute bucket.

    A scenario across a bucket boundary gives a second incident for every sensor still firing
    after it; the queue then holds more rows than the grid shows, and the late incident the
    script looks for can be out of view. Near a boundary the scenario moves into the bucket before.
    """
    bucket_start = datetime.fromtimestamp(now.timestamp() // BUCKET.total_seconds() * BUCKET.total_seconds(), UTC)
    start = now - timedelta(seconds=150)
    return start if start >= bucket_start else bucket_start - timedelta(seconds=125)


def test_the_scenario_never_crosses_a_dedup_bucket() -> None:
    base = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    for second in range(0, 1800, 7):
        now = base + timedelta(seconds=second)
        start = scenario_start(now)
        end = start + timedelta(seconds=120)
        assert end <= now - timedelta(seconds=5), now
        assert start.timestamp() // 900 == end.timestamp() // 900, now


@pytest.fixture
def running_stack(broker: DevBroker, tmp_path: Path) -> Iterator[Stack]:
    """Store writer and worker as processes, with the scenario of the last three minutes in the store."""
    stack = Stack(make_settings(broker, tmp_path, "dashbrowser"), tmp_path / "logs")
    try:
        stack.start("store")
        stack.start("worker")
        start = scenario_start(datetime.now(UTC).replace(microsecond=0))
        messages = wuhan_scenario(load_pack(stack.settings.rules.pack).layers["districts"], start, 120.0)
        produce(stack.settings, messages, speed=0)
        stack.wait_for("the scenario's incidents", lambda: stack.reader.scalar("SELECT count(*) FROM incidents") >= 6)
        yield stack
    finally:
        stack.close()


@pytest.fixture
def dashboard_url(running_stack: Stack, tmp_path: Path) -> Iterator[str]:
    """``streamlit run dashboard/app.py`` with the stack's settings, login on and one operator."""
    settings = running_stack.settings.model_copy(deep=True)
    settings.dashboard.demo_mode = False
    settings.dashboard.users = {
        USER: DashboardUser(password_hash=SecretStr(hash_password(PASSWORD)), roles=["operator", "rule_author"])
    }
    settings.dashboard.track_active_s = 3600  # the scenario's drones stay on the map for the whole test
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYOPS_")} | settings.to_env()
    log = tmp_path / "streamlit.log"
    argv = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        print(f"--- streamlit log\n{log.read_text(errors='replace')[-3000:]}")


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        into.put(raw.decode(errors="replace").rstrip())


def _wait_for_line(lines: queue.Queue[str], prefix: str, seen: list[str], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line.startswith(prefix):
            return line
        if line.startswith("FAILED"):
            return None
    return None


def _finish(node: subprocess.Popen[bytes], lines: queue.Queue[str], seen: list[str], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(timeout=timeout)
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())


def _clickable_incident(stack: Stack) -> dict[str, object]:
    """An open incident with no other within about 1 km (a sustained and a threshold incident of one sensor
    share a position; the click must name one), a water-level one if possible."""
    rows = stack.reader.rows("SELECT id, title, rule_id, lon, lat FROM incidents WHERE status = 'open' ORDER BY id")

    def alone(r: dict[str, object]) -> bool:
        return all(
            abs(float(r["lon"]) - float(o["lon"])) + abs(float(r["lat"]) - float(o["lat"])) > 0.01  # type: ignore[arg-type]
            for o in rows
            if o is not r
        )

    candidates = sorted((r for r in rows if alone(r)), key=lambda r: r["rule_id"] != TARGET_RULE)
    assert candidates, f"every open incident shares its place with another: {rows}"
    return candidates[0]


def _send_late_event(stack: Stack) -> None:
    """A water level of 55 cm in Jiang'an, now: the worker makes a new incident of it."""
    event = {"kind": "reading", "id": f"{LATE_SUBJECT}-1", "ts": datetime.now(UTC).isoformat(), "lon": 114.304,
             "lat": 30.638, "sensor_id": LATE_SUBJECT, "metric": "water_level_cm", "value": 55.0}  # fmt: skip
    producer = KafkaProducer(**stack.settings.kafka.client_options())
    producer.send(stack.settings.kafka.raw_topic, value=orjson.dumps({"events": [event]})).get(10)
    producer.close()


def test_operator_logs_in_acknowledges_from_the_map_and_switches_language(
    running_stack: Stack, dashboard_url: str, tmp_path: Path
) -> None:
    assert shutil.which("node"), "node is required (installed in CI)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    target = _clickable_incident(running_stack)
    config = tmp_path / "browser.json"
    config.write_text(json.dumps({
        "url": dashboard_url, "outdir": str(SHOTS), "user": USER, "password": PASSWORD, "view": WUHAN_VIEW,
        "target": {"lon": target["lon"], "lat": target["lat"]},
        "lateSubject": LATE_SUBJECT,
    }))  # fmt: skip
    node = subprocess.Popen(["node", str(SCRIPT), str(config)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.PIPE, start_new_session=True)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=_lines, args=(node.stdout, lines), daemon=True).start()
    try:
        acked = _wait_for_line(lines, "acked ", seen, timeout=240)
        if acked is None:  # let the script save its failure screenshot before reporting
            _finish(node, lines, seen, timeout=60)
            pytest.fail("\n".join(seen))
        incident_id = acked.split()[1]  # the incident drawn on top where the script clicked
        row = running_stack.reader.incident(incident_id)  # the store has it: the page showed it from there
        assert row is not None and row["status"] == "acknowledged" and row["acknowledged_at"] is not None
        last = running_stack.reader.history(incident_id)[-1]
        assert (last["to_status"], last["actor"], last["note"]) == ("acknowledged", f"user:{USER}", "已派人前往现场")

        if not _wait_for_line(lines, "ready-for-late", seen, timeout=60):
            _finish(node, lines, seen, timeout=60)
            pytest.fail("\n".join(seen))
        _send_late_event(running_stack)
        assert node.stdin is not None
        node.stdin.write(b"late-sent\n")
        node.stdin.flush()
        _finish(node, lines, seen, timeout=300)
        output = "\n".join(seen)
        assert node.returncode == 0, f"browser checks failed (screenshots in {SHOTS}):\n{output}"
        assert "late ok" in output and "english ok" in output and "logout ok" in output
    finally:
        _stop(node)
    for name in ("login-zh-CN.png", "map-zh-CN.png", "map-detail-zh-CN.png", "queue-detail-zh-CN.png", "queue-en.png",
                 "map-en.png", "analytics-en.png", "rules-en.png", "system-en.png"):  # fmt: skip
        shot = SHOTS / name
        assert shot.exists() and shot.stat().st_size > 15_000, f"{shot} is missing or blank"
