"""What an agent does when pure code raised on one message: dead-letter it and go on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rules.pipeline import dead_letter, source_label
from streams import metrics

if TYPE_CHECKING:
    from streams.app import Runtime

logger = logging.getLogger(__name__)


async def dead_letter_failure(rt: Runtime, stage: str, topic: str, msg: Any, exc: Exception) -> Any:
    """A bug must not stop the stream: the message goes to the dead-letter topic with the error.

    Returns the send's future (a Faust FutureMessage).
    """
    logger.exception("%s failed source=%s[%d]@%d", stage, topic, msg.partition, msg.offset)
    dl = dead_letter(
        f"internal error: {exc!r}", "error", source_label(topic, msg.partition, msg.offset), msg.value or b""
    )
    sent = await rt.deadletter.send(key=dl.source.encode(), value=dl.model_dump_json().encode())
    metrics.DEAD_LETTERS.labels(stage, "error").inc()
    return sent
