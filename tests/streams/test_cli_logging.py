"""One-shot commands stay quiet; only a service that starts logs its effective settings."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from streams.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["store", "query", "--help"],
        ["store", "export", "--help"],
        ["store", "--help"],
        ["dashboard", "hash-password", "--help"],
        ["worker", "--help"],
        ["gateway", "--help"],
        ["rules", "validate", "--help"],
    ],
)
def test_help_and_tools_of_service_groups_do_not_dump_the_settings(args: list[str]) -> None:
    result = CliRunner().invoke(main, args, prog_name="cityops")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: cityops "), result.output
    assert "effective settings" not in result.output


def test_a_tool_of_a_service_group_logs_only_its_error() -> None:
    # store query is a client of the store: without one, one Error line and no INFO lines
    result = CliRunner().invoke(main, ["store", "query", "SELECT 1"], env={"CITYOPS_STORE__QUACK_PORT": "1"})
    assert result.exit_code == 1
    assert " INFO " not in result.output
    assert result.output.startswith("Error: the store at quack:127.0.0.1:1 is unreachable")
