"""cityops rules: the ground floor. Event and incident models, rule packs, zone layers, the engine.

Imports no Faust, Kafka, DuckDB or Streamlit: live processing, replay and backtests share it.
"""

from rules.decode import Decoded, Rejected, decode_message, encode_events
from rules.engine import Engine, Outcome, incident_id, run
from rules.errors import EventError, LayerError, PackError, RulesError
from rules.geo import Layer
from rules.model import Enriched, Event, Evidence, Incident, Reading, Report, Track
from rules.pack import LoadedPack, Pack, load_pack, parse_pack

__all__ = [
    "Decoded",
    "Engine",
    "Enriched",
    "Event",
    "EventError",
    "Evidence",
    "Incident",
    "Layer",
    "LayerError",
    "LoadedPack",
    "Outcome",
    "Pack",
    "PackError",
    "Reading",
    "Rejected",
    "Report",
    "RulesError",
    "Track",
    "decode_message",
    "encode_events",
    "incident_id",
    "load_pack",
    "parse_pack",
    "run",
]
