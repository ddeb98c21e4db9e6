"""cityops streams: the Faust app and agents, the store-writer process, simulator, demo and CLI.

Stands on ``rules`` and ``sinks``. Importing this package is cheap: Faust is only imported by
``streams.app`` and ``streams.worker``.
"""

from streams.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
