"""A ``cityops`` command that fails for a known reason ends with ``Error: <message>``, not a traceback."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from rules.errors import PackError
from sinks.errors import StoreUnavailableError
from streams.broker import free_port
from streams.cli import _Commands, main
from streams.errors import BrokerError

PACK = Path(__file__).resolve().parents[2] / "rules" / "packs" / "wuhan" / "pack.yaml"


def _failing(exc: Exception) -> click.Group:
    @click.group(cls=_Commands)
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = None

    @group.command()
    def boom() -> None:
        raise exc

    return group


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (BrokerError("cannot reach the broker at 127.0.0.1:1"), "Error: cannot reach the broker at 127.0.0.1:1"),
        (PackError(["p.yaml:3: rules[0].kind: unknown"]), "Error: p.yaml:3: rules[0].kind: unknown"),
        (StoreUnavailableError("the store is down"), "Error: the store is down"),
        (
            KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']"),
            "Error: cannot reach the Kafka broker at the configured address (KafkaTimeoutError: Unable to bootstrap",
        ),
        (KafkaConnectionError("111 ECONNREFUSED"), "Error: cannot reach the Kafka broker at the configured address"),
    ],
)
def test_known_failures_end_with_their_message_and_status_1(exc: Exception, message: str) -> None:
    result = CliRunner().invoke(_failing(exc), ["boom"])
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output


def test_an_unexpected_error_is_not_hidden() -> None:
    result = CliRunner().invoke(_failing(ZeroDivisionError("bug")), ["boom"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_publishing_to_a_broker_that_is_not_there_says_where_it_looked() -> None:
    # kafka-python gives up bootstrapping after its 30 s default
    address = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["--bootstrap", address, "rules", "publish", str(PACK)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot reach the Kafka broker at {address} ("), result.output
    assert "CITYOPS_KAFKA__BOOTSTRAP" in result.output


def test_a_service_that_fails_logs_the_traceback_then_one_error_line() -> None:
    result = CliRunner().invoke(main, ["--pack", "/no/such/pack.yaml", "worker"], prog_name="cityops")
    assert result.exit_code == 1
    assert "ERROR streams.cli: command failed: /no/such/pack.yaml:1: cannot read rule pack" in result.output
    assert "Traceback" in result.output  # in the service's log, for whoever reads it later
    assert result.output.rstrip().splitlines()[-1] == (
        "Error: /no/such/pack.yaml:1: cannot read rule pack: No such file or directory"
    )
