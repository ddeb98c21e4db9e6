"""Helpers of the gateway tests: a plain HTTP client and a gateway served from a thread."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from rules.model import DeadLetterRecord
from rules.pack import load_pack
from streams.gateways.http import BackgroundServer, HttpGateway
from streams.gateways.outbox import MemoryOutbox, Outbox
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[3]
PACK = REPO / "rules" / "packs" / "wuhan" / "pack.yaml"
STANDARDS = REPO.parent / "shared" / "data" / "standards"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def settings_for_tests(**http: Any) -> Settings:
    s = Settings()
    s.rules.pack = PACK
    s.kafka.topic_prefix = "gw"
    for name, value in http.items():
        if name == "api_keys":
            value = [SecretStr(v) for v in value]
        setattr(s.gateway.http, name, value)
    return s


@contextmanager
def served(settings: Settings, outbox: Outbox | None = None) -> Iterator[tuple[HttpGateway, Any, str]]:
    """(gateway, outbox, base URL) of a gateway served on a free loopback port."""
    box = outbox if outbox is not None else MemoryOutbox()
    gw = HttpGateway(settings, box, load_pack(settings.rules.pack))
    server = BackgroundServer(gw.app()).start()
    try:
        yield gw, box, server.url
    finally:
        server.stop()


def dead_letters(outbox: MemoryOutbox, settings: Settings) -> list[DeadLetterRecord]:
    return [DeadLetterRecord.model_validate_json(v) for v in outbox.values(settings.kafka.deadletter_topic)]


def raw_events(outbox: MemoryOutbox, settings: Settings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in outbox.values(settings.kafka.raw_topic):
        out.extend(json.loads(value)["events"])
    return out
