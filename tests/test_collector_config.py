"""The Collector configurations: YAML, known components, consistent wiring (no Collector binary
can run here, so this is what can be checked)."""

from __future__ import annotations

import pathlib

import pytest

import yaml

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "collector-config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
KINDS = {"receivers": "receiver", "processors": "processor", "exporters": "exporter", "connectors": "connector", "extensions": "extension"}


def known_components() -> dict[str, set[str]]:
    known: dict[str, set[str]] = {}
    for line in (CONFIG_DIR / "components-contrib-v0.157.0.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, name = line.split()
            known.setdefault(kind, set()).add(name)
    return known


def test_there_are_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_names_its_collector_version(path):
    assert "otelcol-contrib v0.157.0" in path.read_text()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_component_exists_in_the_contrib_distribution(path):
    config = yaml.safe_load(path.read_text())
    known = known_components()
    for section, kind in KINDS.items():
        for component_id in config.get(section) or {}:
            component_type = component_id.split("/")[0]
            assert component_type in known[kind], f"{path.name}: {kind} {component_type!r} is not in the recorded list"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipeline_wiring_is_consistent(path):
    config = yaml.safe_load(path.read_text())
    service = config["service"]
    pipelines = service["pipelines"]
    defined = {section: set(config.get(section) or {}) for section in KINDS}
    connectors = defined["connectors"]
    used: dict[str, set[str]] = {section: set() for section in KINDS}
    connector_as_exporter, connector_as_receiver = set(), set()
    for name, pipeline in pipelines.items():
        signal = name.split("/")[0]
        assert signal in ("traces", "metrics", "logs"), name
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"{name} needs receivers and exporters"
        for receiver in pipeline["receivers"]:
            assert receiver in defined["receivers"] | connectors, f"{name}: undefined receiver {receiver}"
            (connector_as_receiver if receiver in connectors else used["receivers"]).add(receiver)
        for processor in pipeline.get("processors", []):
            assert processor in defined["processors"], f"{name}: undefined processor {processor}"
            used["processors"].add(processor)
        for exporter in pipeline["exporters"]:
            assert exporter in defined["exporters"] | connectors, f"{name}: undefined exporter {exporter}"
            (connector_as_exporter if exporter in connectors else used["exporters"]).add(exporter)
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors:
            assert processors[0] == "memory_limiter", f"{name}: memory_limiter must come first"
    assert connector_as_exporter == connectors == connector_as_receiver, "each connector joins two pipelines"
    for section in ("receivers", "processors", "exporters"):
        assert defined[section] == used[section], f"{path.name}: defined but unused {section}: {defined[section] - used[section]}"
    assert set(service.get("extensions", [])) == defined["extensions"]
