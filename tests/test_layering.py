"""Data flows one way (sensor -> rollup -> exporters -> store; analysis reads the store; the CLI
sits on analysis). Each rule is checked by importing a package in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RULES = [
    # (module imported, prefixes that must not be loaded by it)
    ("funcsight.instrumentation._pysensor", ["opentelemetry", "sqlite3", "funcsight.processors", "funcsight.exporters"]),
    ("funcsight.instrumentation.calls", ["opentelemetry", "sqlite3"]),
    ("funcsight.processors.rollup", ["funcsight.exporters", "funcsight.analysis", "funcsight.cli", "sqlite3"]),
    ("funcsight.analysis.breakdown", ["opentelemetry", "funcsight.instrumentation._pysensor", "funcsight.cli", "funcsight.exporters"]),
    ("funcsight.store.db", ["opentelemetry", "funcsight.instrumentation", "funcsight.processors"]),
]


@pytest.mark.parametrize("module,forbidden", RULES)
def test_import_rules(module, forbidden):
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    offenders = [name for name in loaded for prefix in forbidden if name == prefix or name.startswith(prefix + ".")]
    assert offenders == [], f"{module} loads {offenders}"
