"""Exceptions of the alert sinks."""

from __future__ import annotations

from sinks.errors import SinkError


class AlertError(SinkError):
    """Root of every error raised by ``sinks.alerts``."""


class RouteError(AlertError):
    """A route configuration is invalid (duplicate name, bad topic, unknown format)."""


class FormatError(AlertError):
    """An incident cannot be rendered in a route's format (e.g. a CAP update without a previous message)."""
