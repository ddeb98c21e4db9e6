"""Fixtures of the security tests: a test CA, and Tansu behind the SASL/TLS proxy (see secure.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from secure import SecureBroker, TlsFiles, make_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[Callable[..., SecureBroker]]:
    """A factory: ``secure_broker(users=USERS, server_ssl=...)``; everything started is stopped."""
    started: list[SecureBroker] = []

    def make(**options: object) -> SecureBroker:
        b = SecureBroker(tmp_path / f"tansu-{len(started)}.log", **options)
        started.append(b)
        return b

    try:
        yield make
    finally:
        for b in started:
            b.stop()
