"""Worker settings for rule state: it must be recoverable, and the worker app follows the choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, WorkerSettings


def test_state_without_changelog_or_rebuild_is_refused() -> None:
    with pytest.raises(ValidationError, match="state would be lost"):
        WorkerSettings(rebuild_state=False, state_changelog=False)
    assert WorkerSettings(rebuild_state=False, state_changelog=True).state_changelog
    assert WorkerSettings().rebuild_state and not WorkerSettings().state_changelog


@pytest.mark.parametrize("changelog", [False, True])
def test_worker_app_state_and_producer_batching_follow_the_changelog_choice(tmp_path: Path, changelog: bool) -> None:
    import gc

    from streams.app import build_runtime

    s = Settings()
    s.kafka.topic_prefix = f"t.state{int(changelog)}"
    s.worker.data_dir = tmp_path / "faust"
    s.worker.state_changelog = changelog
    s.worker.gc_threshold = 0  # leave this test process's GC alone
    before = gc.get_threshold()
    rt = build_runtime(s)
    assert gc.get_threshold() == before
    assert rt.pipeline.partitions == s.kafka.partitions
    if changelog:
        assert not isinstance(rt.state, dict)
        assert rt.app.conf.producer_max_batch_size == s.kafka.producer_max_batch_size == 1
    else:
        assert isinstance(rt.state, dict)
        assert rt.app.conf.producer_max_batch_size == s.worker.producer_batch_bytes
    assert rt.app.conf.producer_linger == pytest.approx(s.worker.producer_linger_ms / 1000)
