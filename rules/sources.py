"""Source keys: which raw-topic key an event travels under, so each subject keeps its order.

Kafka keeps the order of one key's messages. Sequence rules (sustained, geofence, silence) need
each subject's events in order, so a producer that batches events of many subjects (the MQTT
bridge, the HTTP gateway) splits a batch into a few groups by a stable hash of the subject and
sends each group under its own key. At most ``groups`` envelopes leave per batch, so batching
still pays, and one sensor's readings always share a key (and so a partition).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def source_key(subject: str, groups: int) -> bytes:
    """The raw-topic key of a subject: ``src-<n>`` with n = crc32(subject) mod ``groups``.

    crc32 rather than ``hash()``: Python salts string hashes per process, and the key must be the
    same in every gateway process and after every restart.
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, not {groups}")
    return b"src-%d" % (zlib.crc32(subject.encode()) % groups)


def by_source(items: Sequence[T], subject_of: Callable[[T], str], groups: int) -> list[tuple[bytes, list[T]]]:
    """Split a batch into (key, items) groups by ``source_key``; order inside each group is kept.

    Groups come out in the order of their first item, so the result is deterministic.
    """
    out: dict[bytes, list[T]] = {}
    for item in items:
        out.setdefault(source_key(subject_of(item), groups), []).append(item)
    return list(out.items())
