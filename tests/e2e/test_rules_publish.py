"""Rule authors: publish a pack live (workers swap without a restart), refuse a bad one, backtest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaProducer
from stack import Stack, read_topic

from rules.bundle import bundle_pack
from rules.model import DeadLetterRecord, Incident
from streams.scenario import Message
from streams.simulate import produce

pytestmark = pytest.mark.integration

PACK_DIR = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan"


def cityops(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**stack.settings.to_env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def edited_pack(tmp: Path, version: str, threshold: int) -> Path:
    target = tmp / f"pack-{version}"
    shutil.copytree(PACK_DIR, target)
    path = target / "pack.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace('version: "2026.11.2"', f'version: "{version}"', 1)
    text = text.replace("title: Water level above 30 cm\n", f"title: Water level above {threshold} cm\n", 1)
    marker = "  - id: flood.water-level-high\n"
    head, rest = text.split(marker, 1)
    rule, tail = rest.split("\n\n", 1)
    rule = rule.replace("    value: 30\n", f"    value: {threshold}\n").replace(
        "    value: 30", f"    value: {threshold}"
    )
    path.write_text(head + marker + rule + "\n\n" + tail, encoding="utf-8")
    return path


def test_a_published_pack_is_swapped_in_live_and_an_invalid_one_is_refused(
    stack: Stack, scenario: list[Message], tmp_path: Path
) -> None:
    stack.start("store")
    stack.start("worker")
    half = len(scenario) // 2
    produce(stack.settings, scenario[:half], speed=0)
    stack.wait_for("first incidents", lambda: stack.reader.scalar("SELECT count(*) FROM incidents") > 0)

    v2 = edited_pack(tmp_path, "2026.11.3", 10)
    published = cityops(stack, "rules", "publish", str(v2))
    assert published.returncode == 0, published.stderr
    stack.wait_for("the worker to log the swap", lambda: "version=2026.11.3" in stack.log_tail("worker", 400))

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (v2.read_text(encoding="utf-8")).replace("kind: threshold", "kind: nonsense", 1), encoding="utf-8"
    )
    refused = cityops(stack, "rules", "publish", str(broken))
    assert refused.returncode != 0
    assert "broken.yaml:" in refused.stderr and "unknown rule kind 'nonsense'" in refused.stderr

    # a bad bundle that reaches the topic anyway (another tool, an older cityops) is refused by the worker
    bad = bundle_pack(v2).model_copy(
        update={"digest": "feedface", "version": "bad", "yaml_text": "pack: wuhan\nversion: bad\nrules: [{}]\n"}
    )
    producer = KafkaProducer(bootstrap_servers=stack.settings.kafka.bootstrap, max_request_size=32 * 2**20)
    producer.send(stack.settings.kafka.rules_topic, key=b"wuhan", value=bad.model_dump_json().encode()).get(30)
    producer.close()

    def refused_logged() -> bool:
        letters = [
            DeadLetterRecord.model_validate_json(r.value)
            for r in read_topic(stack.settings, stack.settings.kafka.deadletter_topic, timeout_s=2)
        ]
        return any(d.kind == "invalid_pack" and "wuhan@bad" in d.reason for d in letters)

    stack.wait_for("the refused pack in the dead-letter topic", refused_logged)
    assert "keeping pack=wuhan version=2026.11.3" in stack.log_tail("worker", 400)

    produce(stack.settings, scenario[half:], speed=0)
    stack.wait_for(
        "second-half incidents",
        lambda: stack.reader.scalar("SELECT count(*) FROM incidents WHERE pack_version = '2026.11.3'") > 0,
    )
    alerts = [
        Incident.model_validate_json(r.value) for r in read_topic(stack.settings, stack.settings.kafka.incidents_topic)
    ]
    assert {i.pack_version for i in alerts} == {"2026.11.2", "2026.11.3"}
    assert all(
        i.title == "Water level above 10 cm"
        for i in alerts
        if i.pack_version == "2026.11.3" and i.rule_id == "flood.water-level-high"
    )
    assert stack.children["worker"].alive()

    backtest = cityops(stack, "rules", "backtest", str(v2), "--since", "3650d")
    assert backtest.returncode == 0, backtest.stderr
    row = next(line for line in backtest.stdout.splitlines() if line.startswith("flood.water-level-high"))
    candidate, live = (int(x) for x in row.split()[1:3])
    assert candidate > live >= 2, backtest.stdout
