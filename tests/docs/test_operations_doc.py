"""docs/operations.md names every metric and every security/metrics setting that exists, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from streams import metrics
from streams.settings import KafkaSettings, MetricsSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def test_every_defined_metric_is_documented() -> None:
    defined = {
        m._name + ("_total" if m._type == "counter" else "")  # type: ignore[attr-defined]
        for m in vars(metrics).values()
        if hasattr(m, "_name") and str(m._name).startswith("cityops_")  # type: ignore[attr-defined]
    }
    assert defined, "streams/metrics.py defines metrics"
    missing = {name for name in defined if name not in DOC}
    assert not missing, f"undocumented metrics: {sorted(missing)}"


def test_documented_settings_exist() -> None:
    for var in set(re.findall(r"CITYOPS_KAFKA__([A-Z_]+)", DOC)):
        assert var.lower() in KafkaSettings.model_fields, var
    for var in set(re.findall(r"CITYOPS_METRICS__([A-Z_]+)|`__([A-Z_]+_PORT)`", DOC)):
        name = next(v for v in var if v)
        assert name.lower() in MetricsSettings.model_fields, name
