"""The dev broker: a real Tansu process on a loopback port, started again on another port when the
one it picked is taken before Tansu binds it (another process can take a free port at any time)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams.broker import DevBroker, api_versions_ok
from streams.errors import BrokerError, BrokerExitedError

pytestmark = pytest.mark.integration


def _squat() -> socket.socket:
    """A listening socket on a loopback port, as another process would hold it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_picked_port_taken_before_tansu_binds_it_is_picked_again(tmp_path: Path) -> None:
    with _squat() as squatter:
        taken = squatter.getsockname()[1]
        broker = DevBroker(log_path=tmp_path / "tansu.log")
        broker.port = taken  # what the race looks like: the port picked is someone else's by now

        with broker:
            assert broker.port != taken
            assert api_versions_ok(broker.host, broker.port)
            assert broker.bootstrap == f"127.0.0.1:{broker.port}"


def test_a_port_the_caller_chose_is_not_changed_when_taken(tmp_path: Path) -> None:
    with _squat() as squatter:
        taken = squatter.getsockname()[1]

        with pytest.raises(BrokerExitedError, match=f"127.0.0.1:{taken}") as caught:
            DevBroker(port=taken, log_path=tmp_path / "tansu.log").start()

    assert isinstance(caught.value, BrokerError)
