"""`make audit`: pip-audit over the project's venv; fails on a known vulnerability, never on the network.

pip-audit asks a vulnerability service about every installed distribution: OSV first, then PyPI's
JSON API. Where neither answers for a package (no network, or a registry mirror that does not
serve per-version JSON), pip-audit lists it as skipped and finds "no known vulnerabilities", which
would be a false all-clear; this script says plainly how many packages were audited and prints a
skip message when none could be, exiting 0. A real finding exits 1.

Usage: ``.venv/bin/python scripts/audit.py`` (``--strict`` also fails when nothing could be audited).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

VENV_PYTHON = Path(sys.executable)
SERVICES = ("osv", "pypi")
TIMEOUT_S = 15


def run_audit(service: str) -> tuple[int, dict[str, Any] | None, str]:
    """(exit code, parsed JSON report or None, stderr) of one pip-audit run."""
    cmd = [
        str(VENV_PYTHON),
        "-m",
        "pip_audit",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--skip-editable",
        "--vulnerability-service",
        service,
        "--timeout",
        str(TIMEOUT_S),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        report = None
    return proc.returncode, report, proc.stderr


def summarize(report: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(vulnerable, audited, skipped) dependencies of a pip-audit JSON report."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = [d for d in audited if d.get("vulns")]
    return vulnerable, audited, skipped


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    reasons: list[str] = []
    for service in SERVICES:
        code, report, stderr = run_audit(service)
        if report is None:
            last = stderr.strip().splitlines()[-1:] or ["no output"]
            reasons.append(f"{service}: pip-audit failed (exit {code}): {last[0]}")
            continue
        vulnerable, audited, skipped = summarize(report)
        if vulnerable:
            print(f"pip-audit ({service}): known vulnerabilities in {len(vulnerable)} package(s):")
            for dep in vulnerable:
                for vuln in dep["vulns"]:
                    fixes = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
                    print(f"  {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixes})")
            return 1
        if audited:
            print(
                f"pip-audit ({service}): no known vulnerabilities in {len(audited)} package(s); "
                f"{len(skipped)} could not be audited"
            )
            for dep in skipped[:10]:
                print(f"  skipped {dep['name']}: {dep['skip_reason']}")
            return 0
        sample = skipped[0]["skip_reason"] if skipped else "no dependencies reported"
        reasons.append(f"{service}: 0 of {len(skipped)} packages audited ({sample})")
    print("pip-audit SKIPPED: no vulnerability service answered from this machine, nothing was audited.")
    for reason in reasons:
        print(f"  {reason}")
    print("  Run `make audit` where OSV (api.osv.dev) or PyPI's per-version JSON API is reachable.")
    return 1 if strict else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
