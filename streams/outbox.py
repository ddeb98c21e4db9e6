"""What detect sends, held in the rule-state table until the broker confirms it (changelog mode).

With the rule state in a Faust table (``worker.state_changelog``), state and offsets come back
separately after a restart: an events message whose effect reached the changelog but whose
incident sends did not (a worker killed, or stopped while a send was being retried) is read
again, finds its source position applied, and emits nothing. Its incidents would wait for their
next change, and a late event's dead letter would never come. The outbox closes that:

* detect applies a message to a write-behind view of the table (``Staged``), writes each incident
  snapshot and dead letter it made into the table and sends it, and only then writes the
  message's state changes: in the changelog partition a message's entries come before its state,
  so a changelog that has the state has the entries too;
* once the broker confirms the send, the entry is deleted (by the agent, at its next message of
  that partition: Faust writes a table only from inside the agent);
* after an assignment, the entries the changelog restored for a partition are sent again before
  its first message is handled.

An entry sent twice changes nothing downstream: the store keeps the highest revision of an
incident (and the same dead letter is the same row), and the alert publisher follows the store's
transitions. With checkpoints (the default) none of this is needed: a restart replays the events
topic from the last checkpoint, which a failed send keeps from being written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

OUTBOX_PREFIX = "~outbox"
_GONE = object()  # a staged delete

Topic = Literal["incidents", "deadletter"]


@dataclass(frozen=True)
class Held:
    """One send the outbox holds: where it goes, its Kafka key and value, and its revision."""

    entry: str  # the table key of the entry
    topic: Topic
    key: bytes
    value: bytes
    revision: int


class Outbox:
    """Entries ``~outbox|<topic>|<key>`` in the rule-state table, each with its home partition.

    An incident's entry is replaced by its newer snapshot; a confirmed send deletes the entry only
    if no newer one took its place meanwhile. Pure and synchronous: the detect agent does the sends.
    """

    def __init__(self, state: MutableMapping[str, Any]) -> None:
        self.state = state
        self._delivered: dict[int, dict[str, int]] = {}  # events partition -> entry -> revision confirmed
        self._unsent: set[int] = set()  # assigned partitions whose restored entries are not sent again yet
        self.resent = 0  # entries sent again after an assignment, over this worker's life

    @staticmethod
    def entry(topic: Topic, key: bytes) -> str:
        return f"{OUTBOX_PREFIX}|{topic}|{key.decode()}"

    def hold(self, partition: int, topic: Topic, key: bytes, value: bytes, revision: int = 0) -> Held:
        """Write the send into the table (call inside the agent, before sending)."""
        held = Held(self.entry(topic, key), topic, key, value, revision)
        self.state[held.entry] = {"home": partition, "topic": topic, "rev": revision, "value": value.decode()}
        return held

    def delivered(self, partition: int, held: Held) -> None:
        """The broker confirmed ``held`` (any context: the entry goes at the partition's next ``settle``)."""
        done = self._delivered.setdefault(partition, {})
        if held.revision >= done.get(held.entry, -1):
            done[held.entry] = held.revision

    def settle(self, partition: int) -> int:
        """Delete the partition's entries whose send was confirmed (inside the agent). Returns how many."""
        done = self._delivered.pop(partition, None)
        if not done:
            return 0
        deleted = 0
        for name, revision in done.items():
            current = self.state.get(name)
            if current is not None and int(current["rev"]) <= revision and int(current["home"]) == partition:
                del self.state[name]
                deleted += 1
        return deleted

    def assigned(self, partitions: Iterable[int]) -> None:
        """A new assignment: the entries of these events partitions are sent again before their next message."""
        self._unsent = set(partitions)

    def restored(self, partition: int) -> list[Held]:
        """The partition's entries to send again, once after each assignment (oldest revision first)."""
        if partition not in self._unsent:
            return []
        self._unsent.discard(partition)
        found = []
        mark = OUTBOX_PREFIX + "|"
        for name, value in list(self.state.items()):
            if not name.startswith(mark) or not value or int(value.get("home", -1)) != partition:
                continue
            key = name.split("|", 2)[2].encode()
            found.append(Held(name, value["topic"], key, str(value["value"]).encode(), int(value["rev"])))
        self.resent += len(found)
        return sorted(found, key=lambda h: (h.revision, h.entry))

    def pending(self) -> int:
        """Entries in the table (all partitions this worker holds, standbys included)."""
        mark = OUTBOX_PREFIX + "|"
        return sum(1 for name in list(self.state) if name.startswith(mark))


class Staged(MutableMapping[str, Any]):
    """A write-behind view of a table: reads see the staged writes, ``flush`` writes them.

    Detect applies a message through it, holds the message's sends in the table (``Outbox.hold``),
    then flushes, so the changelog has the entries before the state changes that made them.
    """

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self.staged: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self.staged:
            value = self.staged[key]
            if value is _GONE:
                raise KeyError(key)
            return value
        return self.table[key]

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.staged:
            value = self.staged[key]
            return default if value is _GONE else value
        return self.table.get(key, default)

    def __contains__(self, key: object) -> bool:
        if key in self.staged:
            return self.staged[key] is not _GONE
        return key in self.table

    def __setitem__(self, key: str, value: Any) -> None:
        self.staged[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.staged[key] = _GONE

    def __iter__(self) -> Iterator[str]:
        for key in list(self.table):
            if key not in self.staged:
                yield key
        for key, value in list(self.staged.items()):
            if value is not _GONE:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> int:
        """Write the staged changes to the table (in the order each key was first changed). Returns how many."""
        staged, self.staged = self.staged, {}
        for key, value in staged.items():
            if value is _GONE:
                if key in self.table:
                    del self.table[key]
            else:
                self.table[key] = value
        return len(staged)
