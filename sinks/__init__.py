"""cityops sinks: the DuckDB store writer, the read side (Quack) and alert publishing.

Stands on ``rules``; imports neither Faust nor Streamlit.
"""

from sinks.errors import QueryError, SinkError, StoreUnavailableError
from sinks.read import StoreReader
from sinks.settings import StoreSettings
from sinks.store import Batch, DeadLetter, Store

__all__ = [
    "Batch",
    "DeadLetter",
    "QueryError",
    "SinkError",
    "Store",
    "StoreReader",
    "StoreSettings",
    "StoreUnavailableError",
]
