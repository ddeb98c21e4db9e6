"""Exception root of the streams package."""

from __future__ import annotations


class StreamsError(Exception):
    """Root of every error raised by the streams package."""


class BrokerError(StreamsError):
    """The broker could not be started, reached or configured."""


class BrokerExitedError(BrokerError):
    """The dev broker (Tansu) exited while starting, most often because its port is taken."""
