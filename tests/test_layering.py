"""The folders are the parts, and data flows one way between them:

    write side:  instrumentation (sensor) -> processors (rollup) -> exporters -> store;  agent wires them
    read side:   faces (cli, mcp_server, report, lsp, demo) -> analysis -> sources -> store

Every part may import funcsight's core (the ``funcsight`` folder: config, names, histogram...), which
imports no other part. Two checks, so an import hidden inside a function is seen too:

* an AST scan of every module of every part (imports at any depth, relative ones resolved);
* each module imported in a fresh interpreter, its ``sys.modules`` checked for forbidden packages
  (what a third-party import drags in is seen only this way).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = "funcsight"

# part -> (folder, parts of funcsight it may import)
PARTS = {
    "funcsight": ("funcsight", set()),
    "funcsight.instrumentation": ("instrumentation", set()),
    "funcsight.processors": ("processors", {"funcsight.instrumentation"}),
    "funcsight.store": ("store", set()),
    "funcsight.exporters": ("exporters", {"funcsight.instrumentation", "funcsight.processors", "funcsight.store"}),
    "funcsight.agent": (
        "agent", {"funcsight.instrumentation", "funcsight.processors", "funcsight.exporters", "funcsight.store"}),
    "funcsight.sources": ("sources", {"funcsight.store"}),
    "funcsight.analysis": ("analysis", {"funcsight.sources"}),
    "funcsight.report": ("report", {"funcsight.analysis", "funcsight.sources"}),
    "funcsight.mcp_server": ("mcp_server", {"funcsight.analysis", "funcsight.sources"}),
    "funcsight.lsp": ("lsp", {"funcsight.analysis", "funcsight.sources"}),
    "funcsight.demo": ("demo", set()),
    "funcsight.cli": (
        "cli", {"funcsight.analysis", "funcsight.sources", "funcsight.report", "funcsight.mcp_server", "funcsight.lsp",
                "funcsight.demo"}),
}

# Third-party or stdlib packages a part must never load (directly or through what it imports).
FORBIDDEN_LOADS = {
    "funcsight": ["opentelemetry", "sqlite3"],
    "funcsight.instrumentation": ["opentelemetry", "sqlite3", "logging.handlers"],
    "funcsight.processors": ["sqlite3"],
    "funcsight.sources": ["opentelemetry", "mcp"],
    "funcsight.analysis": ["opentelemetry", "sqlite3", "mcp", "urllib.request"],
    "funcsight.report": ["opentelemetry", "mcp"],
    "funcsight.cli": ["opentelemetry", "mcp", "pygls", "lsprotocol"],
    "funcsight.lsp": ["opentelemetry", "mcp"],
}


def _part_of(module: str) -> str | None:
    best = None
    for part in PARTS:
        if module == part or module.startswith(part + "."):
            if best is None or len(part) > len(best):
                best = part
    return best


def _modules(part: str) -> list[tuple[str, Path]]:
    folder = ROOT / PARTS[part][0]
    found = []
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder).with_suffix("")
        pieces = [p for p in relative.parts if p != "__init__"]
        found.append((".".join([part, *pieces]), path))
    return found


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def test_every_folder_is_a_declared_part():
    """A new top-level Python folder must be given its arrows here (and in pyproject.toml)."""
    declared = {folder for folder, _ in PARTS.values()}
    python_folders = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert python_folders - declared == set()
    assert declared - python_folders == set()


@pytest.mark.parametrize("part", sorted(PARTS))
def test_imports_follow_the_arrows(part):
    allowed = PARTS[part][1] | {part, CORE}
    offenders = []
    for module, path in _modules(part):
        for name in _imports(module, path):
            target = _part_of(name)
            if target is not None and target not in allowed:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("part", sorted(FORBIDDEN_LOADS))
def test_loaded_modules_follow_the_arrows(part):
    allowed = PARTS[part][1] | {part, CORE}
    forbidden = FORBIDDEN_LOADS[part]
    modules = [m for m, path in _modules(part) if not m.endswith("__main__")]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as err:\n"  # an optional extension that is not built
        "        if 'funcsight' in str(err) and '_c' not in name: raise\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    offenders = [n for n in loaded for prefix in forbidden if n == prefix or n.startswith(prefix + ".")]
    offenders += [n for n in loaded if n.startswith("funcsight.") and _part_of(n) not in allowed]
    assert offenders == []


def test_an_app_with_the_store_off_never_loads_sqlite3(tmp_path):
    app = tmp_path / "app.py"
    app.write_text(
        "import sys\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "from funcsight.agent import FuncsightInstrumentor\n"
        "FuncsightInstrumentor().instrument(store='off', app_dir=sys.argv[1])\n"
        "def work(n):\n"
        "    return sum(range(n))\n"
        "with trace.get_tracer('t').start_as_current_span('GET /', kind=trace.SpanKind.SERVER):\n"
        "    work(10)\n"
        "running = FuncsightInstrumentor.running\n"
        "assert running is not None and running.writer is None\n"
        "print('sqlite3' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_"))}
    out = subprocess.check_output([sys.executable, str(app), str(tmp_path)], text=True, env=env, cwd=tmp_path)
    assert out.strip().splitlines()[-1] == "False"
