"""Fixtures of the format tests: the Wuhan pack, its engine and Open311 services."""

from __future__ import annotations

import pytest
from formats_data import REPO

from rules.engine import Engine
from rules.formats.open311 import Gazetteer, Open311Context, Service, ServiceSpec, services_from_pack
from rules.pack import LoadedPack, load_pack


@pytest.fixture(scope="session")
def wuhan() -> LoadedPack:
    return load_pack(REPO / "rules" / "packs" / "wuhan" / "pack.yaml")


@pytest.fixture(scope="session")
def engine(wuhan: LoadedPack) -> Engine:
    return Engine(wuhan)


@pytest.fixture(scope="session")
def services(wuhan: LoadedPack) -> dict[str, Service]:
    extra = [
        ServiceSpec(code="001", name="Cans left out 24x7", group="sanitation"),
        ServiceSpec(code="noise", name="Noise"),
    ]
    return {s.service_code: s for s in services_from_pack(wuhan.spec, extra)}


@pytest.fixture(scope="session")
def open311_ctx(wuhan: LoadedPack, services: dict[str, Service]) -> Open311Context:
    return Open311Context(services, gazetteer=Gazetteer.from_layer(wuhan.layers["districts"]))
