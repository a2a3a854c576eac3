"""Shared by the language-server tests: a demo store made by a real run of the sample shop under
funcsight (once per test session), the shop's source written as a workspace, and a real LSP client
(pytest-lsp) talking to ``funcsight lsp`` over stdio."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from lsprotocol import types
from pytest_lsp import client_capabilities, make_test_lsp_client

from funcsight.demo.sample_app import FILES_V2

from helpers import BIN_DIR, clean_env

FUNCSIGHT = str(BIN_DIR / "funcsight")
LOAD_TIMEOUT_S = 60.0


def demo_store(tmp_path_factory) -> Path:
    """A store of the sample shop 1.0 and 1.1 (``funcsight demo``: real processes under
    ``opentelemetry-instrument``), made once per session and shared read-only."""
    path = tmp_path_factory.getbasetemp() / "lsp-demo" / "demo.db"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        done = subprocess.run([FUNCSIGHT, "demo", "--db", str(path), "--requests", "200"], capture_output=True, text=True,
                              env=clean_env(), timeout=300, cwd=path.parent)
        assert done.returncode == 0, done.stdout + done.stderr
    return path


def write_shop(root: Path, files: dict[str, str] | None = None) -> Path:
    """The shop's 1.1 source (what the developer has open) under ``root``; a different directory
    than the one it ran from, as a checkout is."""
    for relative, text in (files or FILES_V2).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def cli_json(*args: str):
    import json

    done = subprocess.run([FUNCSIGHT, *args, "--format", "json"], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def file_digest(db: Path) -> dict[str, str]:
    out = {}
    for suffix in ("", "-wal"):
        p = Path(str(db) + suffix)
        if p.exists():
            out[suffix or "db"] = hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
    return out


def def_line(text: str, name: str) -> int:
    """0-based line of ``def name``."""
    for index, line in enumerate(text.splitlines()):
        if re.match(rf"\s*(async\s+)?def {re.escape(name)}\b", line):
            return index
    raise AssertionError(f"no def {name}")


@contextlib.asynccontextmanager
async def lsp_session(db: Path, workspace: Path, *args: str, client_spec: str = "visual-studio-code"):
    """A pytest-lsp client connected to ``funcsight lsp --db DB ARGS`` started as a subprocess;
    waits until the server says it loaded the store."""
    client = make_test_lsp_client()
    client.code_lens_refreshes = 0

    @client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def _refresh(params=None):
        client.code_lens_refreshes += 1

    await client.start_io(FUNCSIGHT, "lsp", "--db", str(db), *args, env=clean_env(), cwd=str(workspace))
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=client_capabilities(client_spec),
            root_uri=workspace.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="shop")],
        ))
        await wait_for(lambda: any("funcsight: loaded" in m.message or "funcsight: " in m.message and "generation" in m.message
                                   for m in client.log_messages), "the store loaded")
        yield client
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 10)
        await client.stop()


async def wait_for(predicate, what: str, timeout: float = LOAD_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_file(client, path: Path, text: str | None = None, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text if text is not None else path.read_text())))
    return uri


def run(coro):
    return asyncio.run(coro)


__all__ = ["FUNCSIGHT", "cli_json", "def_line", "demo_store", "file_digest", "lsp_session", "open_file", "run", "wait_for",
           "write_shop", "sys", "os"]
