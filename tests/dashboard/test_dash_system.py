"""The system page: store and worker health, consumer lag (off for Tansu), dead letters, alert delivery,
silences (operators create and expire them through the silences topic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from dashkit import frames, open_page, texts
from stack import read_topic

from rules.silences import Silence
from sinks.store import Batch
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def tiles(at: Any) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.delta) for m in at.metric}


def test_health_tiles_show_the_store_and_infer_the_worker(live_store: RunningStore) -> None:
    at = open_page("system")

    shown = tiles(at)
    assert shown["数据存储服务"][0] == "正常" and shown["数据存储服务"][1].endswith("毫秒")
    assert shown["流处理 worker"][0] == "正常", "an event was stored seconds ago"
    assert shown["存储结构版本"][0] == "2"
    assert shown["待发布的更新"][0] == "5" and shown["已发布的更新"][0] == "0"
    assert "各告警渠道（Webhook、CAP）的投递次数不存储" in texts(at)


def test_quiet_worker_is_flagged(live_store: RunningStore) -> None:
    assert live_store.store is not None
    live_store.store.con.execute("UPDATE events SET stored_at = stored_at - INTERVAL 10 MINUTE")

    at = open_page("system")

    assert tiles(at)["流处理 worker"][0] == "无数据"
    assert any("`cityops worker`" in w.value for w in at.main.warning)


def test_consumer_lag_is_explained_not_shown_for_tansu(live_store: RunningStore) -> None:
    at = open_page("system")

    assert "Tansu" in texts(at) and "CITYOPS_DASHBOARD__CONSUMER_LAG=true" in texts(at)


def test_consumer_lag_when_turned_on_reads_the_groups(
    live_store: RunningStore, kafka_topics: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_topics.kafka.bootstrap)
    for n in range(3):
        producer.send(kafka_topics.kafka.raw_topic, value=b"x%d" % n, partition=0).get(10)
    producer.close()
    kafka = kafka_topics.kafka
    consumer = KafkaConsumer(
        kafka.raw_topic, bootstrap_servers=kafka.bootstrap, group_id=kafka.app_id, auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000, consumer_timeout_ms=15000,
    )  # fmt: skip
    next(iter(consumer))
    consumer.commit()
    consumer.close()
    monkeypatch.setenv("CITYOPS_DASHBOARD__CONSUMER_LAG", "true")
    get_settings.cache_clear()

    at = open_page("system")

    lag = next(f for f in frames(at) if "消费组" in f.columns)
    row = lag.iloc[0]
    assert (row["进程"], row["消费组"], row["主题"]) == (
        "worker",
        kafka_topics.kafka.app_id,
        kafka_topics.kafka.raw_topic,
    )
    assert row["延迟（条）"] >= 0  # Tansu's end offsets are wrong: the number is not checked, the path is


def test_dead_letters_are_listed_with_their_reasons(live_store: RunningStore) -> None:
    at = open_page("system")

    dead = next(f for f in frames(at) if "原因" in f.columns and "来源" in f.columns)
    assert list(dead["原因"]) == ["not JSON: expected value at line 1"]
    assert list(dead["类型"]) == ["非 JSON"] and list(dead["来源"]) == ["cityops.events.raw[0]@17"]
    assert "**非 JSON** 1" in texts(at)


def test_no_dead_letters_is_good_news(empty_store: RunningStore) -> None:
    at = open_page("system")

    assert [s.value for s in at.success] == ["没有死信：所有记录都已处理。"]
    assert tiles(at)["流处理 worker"][0] == "无数据"


def test_unreachable_store(unreachable_store: RunningStore) -> None:
    at = open_page("system")

    assert tiles(at)["数据存储服务"][0] == "无法连接"
    assert any("`cityops store`" in e.value for e in at.error)


def test_silences_are_listed_with_what_they_cover(live_store: RunningStore) -> None:
    now = datetime.now(UTC)
    silence = Silence(silence_id="works-0001", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1),
                      zones=["420111"], rules=["airspace.*"], created_by="wang.wu", reason="drone show")  # fmt: skip
    assert live_store.store is not None
    live_store.store.apply(Batch(silences=[silence]))

    at = open_page("system")

    table = next(f for f in frames(at) if "覆盖事件数" in f.columns)
    row = table.iloc[0]
    assert (row["编号"], row["状态"], row["行政区"], row["规则"], row["创建人"]) == (
        "works-0001", "生效中", "420111", "airspace.*", "wang.wu",
    )  # fmt: skip


def test_operator_creates_and_expires_a_silence_through_the_topic(
    live_store: RunningStore, with_users: dict[str, object], kafka_topics: Settings
) -> None:
    at = open_page("system", user="op1")
    at.multiselect(key="silence_zones.zh-CN").set_value(["420106"])
    at.text_input(key="silence_rules").input("flood.*, sanitation.*")
    at.number_input(key="silence_hours").set_value(3.0)
    at.text_input(key="silence_reason").input("pump maintenance")
    next(b for b in at.button if b.label == "创建静默规则").click().run()

    assert any(s.value.startswith("静默规则 dash-") for s in at.success)
    (record,) = read_topic(kafka_topics, kafka_topics.kafka.silences_topic, 3)
    created = Silence.model_validate_json(record.value)
    assert (created.zones, created.rules, created.created_by, created.reason) == (
        ["420106"], ["flood.*", "sanitation.*"], "op1", "pump maintenance",
    )  # fmt: skip
    assert timedelta(hours=2.9) < created.ends_at - created.starts_at <= timedelta(hours=3)

    assert live_store.store is not None
    live_store.store.apply(Batch(silences=[created]))  # what the store writer does
    at = open_page("system", user="op1")
    at.selectbox(key="silence_pick").set_value(created.silence_id)
    next(b for b in at.button if b.label == "立即结束").click().run()

    records = read_topic(kafka_topics, kafka_topics.kafka.silences_topic, 3)
    assert Silence.model_validate_json(records[-1].value).expired


def test_silence_needs_a_reason(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = open_page("system", user="op1")
    next(b for b in at.button if b.label == "创建静默规则").click().run()

    assert [e.value for e in at.main.error] == ["请填写静默原因。"]


def test_viewer_sees_silences_but_no_forms(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = open_page("system", user="viewer1")

    assert not [b for b in at.button if b.label in ("创建静默规则", "立即结束")]
    assert "值班操作人员可以创建和结束静默规则。" in texts(at)
