"""Input formats of the gateways, as pure functions: Open311, SensorThings, CloudEvents, field mappings.

Every parser takes bytes or parsed JSON and returns events (WGS-84, validated by
:mod:`rules.model`) or :class:`rules.decode.Rejected` records with a reason. None of them
raises on bad input, and none imports a network library.
"""

from rules.formats.cloudevents_in import (
    CloudEvent,
    CloudEventContext,
    events_from_cloudevents,
    from_binary,
    from_kafka,
    from_structured,
    ingest_record,
)
from rules.formats.mapping import FieldMapping, JsonPath, decode_cityops, map_fields, parse_crs, to_wgs84_records
from rules.formats.open311 import Gazetteer, Open311Context, Service, ServiceSpec, parse_service_request
from rules.formats.sensorthings import LocationCache, datastream_id_from_topic, parse_observation

__all__ = [
    "CloudEvent",
    "CloudEventContext",
    "FieldMapping",
    "Gazetteer",
    "JsonPath",
    "LocationCache",
    "Open311Context",
    "Service",
    "ServiceSpec",
    "datastream_id_from_topic",
    "decode_cityops",
    "events_from_cloudevents",
    "from_binary",
    "from_kafka",
    "from_structured",
    "ingest_record",
    "map_fields",
    "parse_crs",
    "parse_observation",
    "parse_service_request",
    "to_wgs84_records",
]
