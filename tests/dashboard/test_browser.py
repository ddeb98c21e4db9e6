"""What a person sees: a real Streamlit server on a free port, driven by headless Chromium.

The browser script (``browser.mjs``) opens a deep link to the overview on a fresh server (the
case where Streamlit would otherwise run the page without ``app.py``), checks the incident table,
the map canvas and that nothing is fetched from another host, waits for an incident written
after the page loaded to appear through the live refresh, switches to English, and saves
screenshots to ``artifacts/screenshots/`` (a CI artefact, not in git).
"""

from __future__ import annotations

import contextlib
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
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sinks.store import Batch
from streams.broker import free_port

if TYPE_CHECKING:
    from .conftest import RunningStore

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("browser.mjs")
SHOTS = REPO / "artifacts" / "screenshots"
LATE_SUBJECT = "wl-jiangan-113"


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


@pytest.fixture
def dashboard_url(live_store: RunningStore, tmp_path: Path) -> Iterator[str]:
    """A Streamlit server for ``dashboard/app.py`` reading the fixture store (CITYOPS_* from the fixture)."""
    port = free_port()
    log = tmp_path / "streamlit.log"
    argv = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
            "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(proc, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        into.put(raw.decode(errors="replace").rstrip())


def _wait_for_line(lines: queue.Queue[str], wanted: str, seen: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if line == wanted:
            return True
    return False


def test_overview_shows_incidents_map_and_live_updates_in_chromium(
    live_store: RunningStore, dashboard_url: str
) -> None:
    assert shutil.which("node"), "node is required (installed in CI)"
    for old in ("overview-zh-CN.png", "overview-en.png", "failure.png"):
        (SHOTS / old).unlink(missing_ok=True)
    first = live_store.by_rule("flood.water-level-high")
    late = first.model_copy(update={
        "id": "late-" + first.id, "subject": LATE_SUBJECT, "zone_id": "420102", "zone_name": "江岸区",
        "lon": 114.304, "lat": 30.638, "severity": "critical",
        "last_event_at": first.last_event_at + timedelta(minutes=1),
    })  # fmt: skip
    node = subprocess.Popen(
        ["node", str(SCRIPT), f"{dashboard_url}/overview", str(SHOTS), first.title, LATE_SUBJECT],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=_lines, args=(node.stdout, lines), daemon=True).start()
    try:
        if _wait_for_line(lines, "ready", seen, timeout=150):
            assert live_store.store is not None
            live_store.store.apply(Batch(incidents=[late]))  # appears through the live refresh, no reload
        node.wait(timeout=180)
        while not lines.empty():
            seen.append(lines.get())
        output = "\n".join(seen)
        assert node.returncode == 0, f"browser checks failed (screenshots in {SHOTS}):\n{output}"
        assert "live refresh ok" in output
    finally:
        _stop(node)
    for name in ("overview-zh-CN.png", "overview-en.png"):
        shot = SHOTS / name
        assert shot.exists() and shot.stat().st_size > 50_000, f"{shot} is missing or blank"
