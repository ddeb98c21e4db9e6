"""Exception root of the sinks package."""

from __future__ import annotations


class SinkError(Exception):
    """Root of every error raised by the sinks package."""


class StoreUnavailableError(SinkError):
    """The store writer cannot be reached through Quack (is `cityops store` running?)."""


class QueryError(SinkError):
    """A read-side query failed or was refused by the store's read-only policy."""
