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
    ("funcsight.instrumentation.sensor", ["opentelemetry", "sqlite3", "funcsight.processors", "funcsight.exporters", "funcsight.agent"]),
    ("funcsight.processors.rollup", ["funcsight.exporters", "funcsight.agent", "funcsight.analysis", "funcsight.cli", "sqlite3"]),
    # Exporters consume a drained Window: they never import the rollup processor, the sensor's
    # hot path or the agent; the pipeline, metrics and spans never the store (sqlite3).
    ("funcsight.exporters.pipeline", ["funcsight.processors.rollup", "funcsight.instrumentation._pysensor", "funcsight.agent", "sqlite3"]),
    ("funcsight.exporters.metrics", ["funcsight.processors.rollup", "funcsight.instrumentation._pysensor", "funcsight.agent", "sqlite3"]),
    ("funcsight.exporters.spans", ["funcsight.processors.rollup", "funcsight.instrumentation._pysensor", "funcsight.agent", "sqlite3"]),
    ("funcsight.exporters.store_writer", ["funcsight.processors.rollup", "funcsight.instrumentation._pysensor", "funcsight.agent", "opentelemetry"]),
    # The agent imports the store writer (and so sqlite3) only when the store is on.
    ("funcsight.agent", ["sqlite3", "funcsight.exporters.store_writer", "funcsight.analysis", "funcsight.cli"]),
    ("funcsight.analysis.breakdown", ["opentelemetry", "funcsight.instrumentation._pysensor", "funcsight.cli", "funcsight.exporters"]),
    ("funcsight.store.db", ["opentelemetry", "funcsight.instrumentation", "funcsight.processors"]),
]

WRITE_SIDE = ["opentelemetry", "funcsight.instrumentation", "funcsight.processors", "funcsight.exporters", "funcsight.agent"]
FACES = ["funcsight.cli", "funcsight.mcp_server", "funcsight.report", "mcp", "click"]
RULES += [
    # Sources read the store or Prometheus: never the write side, the analysis or a face.
    *[(module, WRITE_SIDE + FACES + ["funcsight.analysis"]) for module in (
        "funcsight.sources", "funcsight.sources.store", "funcsight.sources.prometheus")],
    # Analysis: pure functions over a source; not even sqlite3 (the store source is the caller's choice).
    *[(f"funcsight.analysis.{name}", WRITE_SIDE + FACES + ["sqlite3", "funcsight.sources.store", "funcsight.sources.prometheus"])
      for name in ("breakdown", "compare", "anomalies", "errors", "stats", "wording")],
    ("funcsight.durations", WRITE_SIDE + FACES + ["funcsight.analysis", "funcsight.sources"]),
    # Faces never import each other (the CLI registers the others' subcommands: that one direction only).
    ("funcsight.report.html", WRITE_SIDE + ["funcsight.cli", "funcsight.mcp_server", "mcp"]),
    ("funcsight.report.cli", WRITE_SIDE + ["funcsight.cli", "funcsight.mcp_server", "mcp"]),
    # (the MCP SDK itself loads the OpenTelemetry API: only funcsight's write side is forbidden here)
    ("funcsight.mcp_server.tools", WRITE_SIDE[1:] + ["funcsight.cli", "funcsight.report"]),
    ("funcsight.cli.main", WRITE_SIDE + ["mcp"]),
]


@pytest.mark.parametrize("module,forbidden", RULES)
def test_import_rules(module, forbidden):
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    offenders = [name for name in loaded for prefix in forbidden if name == prefix or name.startswith(prefix + ".")]
    assert offenders == [], f"{module} loads {offenders}"
