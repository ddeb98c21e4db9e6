"""Operator actions from the incident detail: through the actions topic on a real broker, applied by the
store writer (in process here), confirmed by polling the store; roles decide who sees the form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from conftest import PM25, WATER_LEVEL
from dashkit import badges, frames, open_page, texts
from stack import read_topic

from rules.lifecycle import Action
from sinks.store import Batch
from streams.settings import Settings

if TYPE_CHECKING:
    from conftest import RunningStore

pytestmark = pytest.mark.integration


def submit(at: Any, incident_id: str, action: str, *, note: str = "", assignee: str = "") -> Any:
    at.radio(key=f"action_choice_{incident_id}.zh-CN").set_value(action)
    at.text_input(key=f"action_assignee_{incident_id}").input(assignee)
    at.text_area(key=f"action_note_{incident_id}").input(note)
    next(b for b in at.button if b.label in ("提交", "Send")).click()
    return at.run()


def sent_actions(settings: Settings) -> list[Action]:
    return [Action.model_validate_json(r.value) for r in read_topic(settings, settings.kafka.actions_topic, 3)]


def apply_sent(store: RunningStore, settings: Settings) -> list[Action]:
    """What the store writer does: apply the actions from the topic."""
    actions = sent_actions(settings)
    assert store.store is not None
    store.store.apply(Batch(actions=actions))
    return actions


def test_operator_acknowledges_and_sees_the_new_state_once_the_store_has_it(
    live_store: RunningStore, with_users: dict[str, object], kafka_topics: Settings
) -> None:
    at = open_page("queue", user="op1", incident=WATER_LEVEL.id)
    assert at.radio(key=f"action_choice_{WATER_LEVEL.id}.zh-CN").options == ["确认", "指派", "解决", "备注"]

    submit(at, WATER_LEVEL.id, "ack", note="crew on the way")

    assert [i.value for i in at.main.info] == ["已发送“确认”，等待数据存储服务处理…"]
    (action,) = apply_sent(live_store, kafka_topics)
    assert (action.incident_id, action.action, action.actor, action.note) == (
        WATER_LEVEL.id, "ack", "op1", "crew on the way",
    )  # fmt: skip

    at.run()  # the fragment's next poll finds it and reruns the page

    assert [s.value for s in at.success] == ["“确认”已生效，事件已显示新状态。"]
    assert "状态：已确认" in badges(at)
    history = frames(at)[-1]
    newest = history.iloc[0]
    assert (newest["操作者"], newest["备注"]) == ("user:op1", "crew on the way"), "newest first"
    assert at.radio(key=f"action_choice_{WATER_LEVEL.id}.zh-CN").options == ["指派", "解决", "备注"]
    row = next(r for r in frames(at)[0].to_dict("records") if r["标题"] == WATER_LEVEL.title)
    assert row["状态"] == "已确认", "the queue shows it too"


def test_assign_needs_an_assignee_and_records_it(
    live_store: RunningStore, with_users: dict[str, object], kafka_topics: Settings
) -> None:
    at = open_page("queue", user="op1", incident=PM25.id)
    submit(at, PM25.id, "assign")
    assert [e.value for e in at.main.error] == ["请填写指派给谁。"]
    assert sent_actions(kafka_topics) == []

    submit(at, PM25.id, "assign", assignee="li.wei")
    apply_sent(live_store, kafka_topics)
    at.run()

    assert "状态：处置中" in badges(at)
    facts = frames(at)[1]
    assert dict(zip(facts["字段"], facts["值"], strict=True))["处置人"] == "li.wei"


def test_an_action_the_store_rejects_is_reported(
    live_store: RunningStore, with_users: dict[str, object], kafka_topics: Settings
) -> None:
    at = open_page("queue", user="op1", incident=PM25.id)
    submit(at, PM25.id, "ack")
    assert live_store.store is not None  # meanwhile another operator resolved it
    live_store.store.apply(
        Batch(actions=[Action(action_id="other-op-resolves", incident_id=PM25.id, action="resolve", actor="li.wei",
                              at=PM25.last_event_at)])
    )  # fmt: skip
    apply_sent(live_store, kafka_topics)

    at.run()

    assert len(at.main.error) == 1 and at.main.error[0].value.startswith("数据存储服务拒绝了该操作：")
    assert "cannot ack an incident that is resolved" in at.main.error[0].value


def test_viewer_sees_no_action_form(live_store: RunningStore, with_users: dict[str, object]) -> None:
    at = open_page("queue", user="viewer1", incident=WATER_LEVEL.id)

    assert not at.radio and not [b for b in at.button if b.label == "提交"]
    assert "您的角色只能查看事件。值班操作人员可以处置。" in texts(at)


def test_unreachable_broker_says_how_to_start_it(
    live_store: RunningStore, with_users: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.broker import free_port
    from streams.settings import get_settings

    monkeypatch.setenv("CITYOPS_KAFKA__BOOTSTRAP", f"127.0.0.1:{free_port()}")
    get_settings.cache_clear()
    at = open_page("queue", user="op1", incident=WATER_LEVEL.id)

    submit(at, WATER_LEVEL.id, "comment", note="hello")

    assert len(at.main.error) == 1 and "`cityops broker`" in at.main.error[0].value
