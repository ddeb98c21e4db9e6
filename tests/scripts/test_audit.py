"""scripts/audit.py: a finding fails, an unreachable service is a loud skip, never a silent pass."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import audit

SKIPPED = {"name": "x", "version": "1", "skip_reason": "Dependency not found on PyPI and could not be audited: x (1)"}


def fake(reports: dict[str, tuple[int, dict[str, Any] | None, str]]) -> Any:
    return lambda service: reports[service]


def test_a_known_vulnerability_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    vuln = {"name": "jinja2", "version": "2.4.1", "vulns": [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"]}]}
    monkeypatch.setattr(audit, "run_audit", fake({"osv": (1, {"dependencies": [vuln, SKIPPED]}, "")}))
    assert audit.main([]) == 1
    assert "jinja2 2.4.1: PYSEC-2019-217 (fixed in: 2.10.1)" in capsys.readouterr().out


def test_a_clean_audit_passes_and_counts(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"name": "requests", "version": "2.34.2", "vulns": []}
    monkeypatch.setattr(audit, "run_audit", fake({"osv": (0, {"dependencies": [ok, SKIPPED]}, "")}))
    assert audit.main([]) == 0
    assert "no known vulnerabilities in 1 package(s); 1 could not be audited" in capsys.readouterr().out


def test_no_reachable_service_is_a_loud_skip(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        audit,
        "run_audit",
        fake({"osv": (1, None, "ConnectionError: api.osv.dev"), "pypi": (0, {"dependencies": [SKIPPED]}, "")}),
    )
    assert audit.main([]) == 0
    out = capsys.readouterr().out
    assert "pip-audit SKIPPED" in out and "osv: pip-audit failed" in out and "pypi: 0 of 1 packages audited" in out
    assert audit.main(["--strict"]) == 1
