"""Acknowledge a consumed message only once everything made from it has reached the broker.

Faust acks a message when the agent moves on to the next one, and commits acked offsets after a
producer flush. A send that fails is only logged by Faust (``streams.app.SendErrors`` resends it),
so the source offset is committed all the same. A worker that stops before the resend succeeds
then leaves a message whose output never arrived behind the committed offset, and with the rule
state in a changelog (``worker.rebuild_state=false``) nothing would ever read it again.

``Deliveries`` closes that: the ingest agent reads its stream without automatic acks, and acks a
raw message only when every send made for it (and for any message repaired before it) was
delivered, first time or by a resend. A message whose send is given up is never acked, so the
committed offset stays below it and the next owner of the partition reads it again; both stages
are idempotent per source position, so what was delivered meanwhile is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from streams import metrics

logger = logging.getLogger(__name__)


class Resends(Protocol):
    """Where a failed send's retry can be awaited (``streams.app.SendErrors``)."""

    def outcome(self, token: Any) -> asyncio.Future[bool] | None:
        """True once a resend of the send ``token`` names (Faust's PendingMessage, or the producer's
        future of a ``streams.publisher`` send) was delivered, False if given up; None when it is not
        being resent."""


class Deliveries:
    """Runs an ack once a set of sends (Faust FutureMessages or producer futures) has been delivered."""

    def __init__(self, resends: Resends) -> None:
        self.resends = resends
        self.waiting = 0  # messages whose ack waits for a send
        self.withheld = 0  # messages never acked: a send of theirs was lost

    def ack_when_sent(self, ack: Callable[[], None], sends: Iterable[asyncio.Future[Any]], source: str) -> None:
        """Call ``ack`` when every one of ``sends`` is delivered (now, if they all are)."""

        def done(ok: bool) -> None:
            if ok:
                ack()
                return
            self.withheld += 1
            metrics.RAW_WITHHELD.inc()
            logger.error(
                "not acknowledged source=%s: a send made for it was not delivered; its offset is not "
                "committed, so the partition's next owner reads it again",
                source,
            )

        self.when_sent(sends, done)

    def when_sent(self, sends: Iterable[asyncio.Future[Any]], done: Callable[[bool], None]) -> None:
        """Call ``done(True)`` when every one of ``sends`` is delivered (now, if they all are), first
        time or by a resend; ``done(False)`` once they all settled and one was given up."""
        pending = [f for f in sends if not _delivered(f)]
        if not pending:
            done(True)
            return
        self.waiting += 1
        left = len(pending)
        lost = False

        def settled(ok: bool) -> None:
            nonlocal left, lost
            left -= 1
            lost = lost or not ok
            if left:
                return
            self.waiting -= 1
            done(not lost)

        for fut in pending:
            fut.add_done_callback(lambda f: self._settled(f, settled))

    def _settled(self, fut: asyncio.Future[Any], settled: Callable[[bool], None]) -> None:
        if _delivered(fut):
            settled(True)
            return
        # Faust's FutureMessage carries its PendingMessage; a direct send's future is its own token
        retry = self.resends.outcome(getattr(fut, "message", fut))
        if retry is None:
            settled(False)
            return
        retry.add_done_callback(lambda r: settled(not r.cancelled() and bool(r.result())))


def _delivered(fut: asyncio.Future[Any]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None
