"""Operators from the CLI: an ack goes through the actions topic and lands in DuckDB and the audit trail."""

from __future__ import annotations

import subprocess
import sys

import pytest
from stack import Stack, read_topic

from rules.lifecycle import Transition
from streams.scenario import Message
from streams.simulate import produce

pytestmark = pytest.mark.integration


def cityops(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**stack.settings.to_env(), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_actions_change_the_state_record_the_user_and_publish_transitions(
    stack: Stack, scenario: list[Message]
) -> None:
    stack.start("store")
    stack.start("worker")
    produce(stack.settings, scenario, speed=0)
    stack.wait_for("incidents", lambda: stack.reader.scalar("SELECT count(*) FROM incidents") >= 6)
    target = stack.reader.scalar(
        "SELECT id FROM incidents WHERE rule_id = 'flood.water-level-high' ORDER BY id LIMIT 1"
    )

    ack = cityops(stack, "incident", "ack", target, "--actor", "zhang.san", "--note", "crew on the way")
    assert ack.returncode == 0, ack.stderr
    assert f"ack: {target} -> acknowledged" in ack.stdout
    assign = cityops(stack, "incident", "assign", target, "--to", "li.wei", "--actor", "zhang.san")
    assert assign.returncode == 0, assign.stderr
    row = stack.reader.incident(target)
    assert row is not None and (row["status"], row["assignee"]) == ("in_progress", "li.wei")

    illegal = cityops(stack, "incident", "close", target, "--actor", "zhang.san")
    assert illegal.returncode != 0
    assert "cannot close an incident that is in_progress" in illegal.stderr
    unknown = cityops(stack, "incident", "ack", "no-such-incident")
    assert unknown.returncode != 0 and "unknown incident no-such-incident" in unknown.stderr

    trail = stack.reader.history(target)
    # the rule keeps updating the incident meanwhile; the operators' entries are in order among them
    assert [(h["kind"], h["to_status"], h["actor"]) for h in trail if h["actor"].startswith("user:")] == [
        ("transition", "acknowledged", "user:zhang.san"),
        ("transition", "in_progress", "user:zhang.san"),
    ]

    def published() -> bool:
        records = read_topic(stack.settings, stack.settings.kafka.updates_topic, timeout_s=2)
        mine = [Transition.model_validate_json(r.value) for r in records if r.key == target.encode()]
        return [t.to_status for t in mine if t.actor.startswith("user:")] == ["acknowledged", "in_progress"]

    stack.wait_for("the transitions on the incident-updates topic", published, timeout=30)


def test_the_http_endpoint_takes_actions_and_answers_unknown_and_illegal_ones_clearly(
    stack: Stack, scenario: list[Message]
) -> None:
    import json as _json
    import urllib.error
    import urllib.request

    from pydantic import SecretStr

    from streams.gateways.http import BackgroundServer, build_gateway

    stack.settings.gateway.http.api_keys = [SecretStr("ops-key-123")]
    stack.start("store")
    stack.start("worker")
    produce(stack.settings, scenario, speed=0)
    stack.wait_for("incidents", lambda: stack.reader.scalar("SELECT count(*) FROM incidents") >= 6)
    target = stack.reader.scalar("SELECT id FROM incidents ORDER BY id LIMIT 1")
    gateway = build_gateway(stack.settings)
    server = BackgroundServer(gateway.app()).start()

    def post(incident_id: str, body: dict[str, object], key: str = "ops-key-123") -> tuple[int, object]:
        req = urllib.request.Request(
            f"{server.url}/incidents/{incident_id}/actions",
            data=_json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, _json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _json.loads(err.read())

    try:
        status, body = post(target, {"action": "ack", "actor": "wang.wu", "note": "seen on CCTV"})
        assert status == 202, body
        stack.wait_for("the ack in the store", lambda: stack.reader.incident(target)["status"] == "acknowledged")
        users = [h for h in stack.reader.history(target) if h["actor"].startswith("user:")]
        assert [(h["to_status"], h["actor"], h["note"]) for h in users] == [
            ("acknowledged", "user:wang.wu", "seen on CCTV")
        ]
        assert post(target, {"action": "close", "actor": "wang.wu"})[0] == 409
        assert post("f" * 24, {"action": "ack", "actor": "wang.wu"})[0] == 404
        assert post(target, {"action": "ack", "actor": "wang.wu"}, key="wrong")[0] == 403
        assert post(target, {"action": "explode", "actor": "wang.wu"})[0] == 400
    finally:
        server.stop()
        gateway.outbox.close()
