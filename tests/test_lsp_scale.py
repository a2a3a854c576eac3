"""``funcsight lsp`` with 10,000 sensed functions: the store written by the real StoreWriter from
real windows, ten modules of 1,000 functions each on disk; a CodeLens request over a 1,000-function
file is timed through a real client. Also: the LSP's code hash is the sensor's."""

from __future__ import annotations

import os
import socket
import statistics
import time
import uuid
from types import CodeType

from lsprotocol import types

from funcsight.exporters.store_writer import ProcessIdentity, StoreWriter
from funcsight.instrumentation.calls import CallTable
from funcsight.instrumentation.registry import FunctionRegistry, code_hash as sensor_hash, function_info
from funcsight.lsp.mapping import code_hash as lsp_hash
from funcsight.processors.windows import WindowAggregator

from lsp_support import lsp_session, open_file, run, wait_for

MODULES, PER_MODULE = 10, 1_000
COLD_BOUND_S = 3.0  # first request on a newly opened file: parse, compile, hash, map, render
WARM_BOUND_S = 0.5


def _module_text(index: int) -> str:
    parts = []
    for j in range(PER_MODULE):
        if j % 10 == 0:
            parts.append(f"class C{j}:\n    def method(self, x):\n        return x * {j}\n")
        else:
            parts.append(f"def f{j}(x, y={j}):\n    total = x + y\n    return total * {index}\n")
    return "\n\n".join(parts)


def _codes(code: CodeType):
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield const
            yield from _codes(const)


def _big_store(root, db):
    registry = FunctionRegistry(max_functions=50_000)
    fids = []
    pkg = root / "big"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for i in range(MODULES):
        path = pkg / f"mod{i}.py"
        text = _module_text(i)
        path.write_text(text)
        for code in _codes(compile(text, str(path), "exec", dont_inherit=True)):
            if "." in code.co_qualname or code.co_qualname.startswith("f"):  # functions and methods, not class bodies
                fids.append(registry.register(function_info(code, f"big.mod{i}")))
    assert len(fids) == MODULES * PER_MODULE
    identity = ProcessIdentity("big", "2.0", "resource", str(uuid.uuid4()), os.getpid(), socket.gethostname(), time.time())
    writer = StoreWriter(str(db), registry, identity)
    try:
        for _window in range(2):
            windows = WindowAggregator(max_series=10 * len(fids))
            for request in range(4):
                table = CallTable()
                for n, fid in enumerate(fids):
                    table.add_call(fid, 1_000 + n, 500 + n, ValueError if (n + request) % 997 == 0 else None)
                windows.add_request(f"/route/{request % 2}", table, 50_000_000, False)
            assert writer.write_window(windows.drain()) is True
    finally:
        writer.close()
    return pkg


def test_codelens_latency_with_10k_functions(tmp_path):
    db = tmp_path / "big.db"
    pkg = _big_store(tmp_path, db)
    target = pkg / "mod3.py"

    async def go():
        started = time.perf_counter()
        async with lsp_session(db, tmp_path) as client:
            ready = time.perf_counter() - started
            loaded = next(m.message for m in client.log_messages if "funcsight: loaded" in m.message)
            uri = open_file(client, target)
            t0 = time.perf_counter()
            lenses = await client.text_document_code_lens_async(types.CodeLensParams(types.TextDocumentIdentifier(uri)))
            cold = time.perf_counter() - t0
            warm = []
            for _ in range(7):
                t0 = time.perf_counter()
                again = await client.text_document_code_lens_async(types.CodeLensParams(types.TextDocumentIdentifier(uri)))
                warm.append(time.perf_counter() - t0)
                assert len(again) == len(lenses)
            hover = await client.text_document_hover_async(types.HoverParams(
                types.TextDocumentIdentifier(uri), types.Position(line=lenses[5].range.start.line, character=5)))
            await wait_for(lambda: uri in client.diagnostics, "diagnostics")
            return ready, loaded, lenses, cold, statistics.median(warm), hover, client.diagnostics[uri]

    ready, loaded, lenses, cold, warm, hover, diagnostics = run(go())
    print(f"\n10k functions: server ready (store loaded) after {ready:.2f} s [{loaded}]; "
          f"CodeLens over {len(lenses)} functions: first {cold * 1000:.1f} ms, then median {warm * 1000:.1f} ms")
    assert "loaded 10000 functions" in loaded
    assert len(lenses) == PER_MODULE
    assert all(l.command.title.startswith("2.0: 1 calls/req") and " · 2 routes" in l.command.title for l in lenses), lenses[0]
    assert not any("edited" in l.command.title for l in lenses)  # the hashes on disk are the recorded ones
    assert hover is not None and "big.mod3." in hover.contents.value
    assert list(diagnostics) == []  # one version: no diff, nothing edited
    assert cold < COLD_BOUND_S, cold
    assert warm < WARM_BOUND_S, warm


def test_the_lsp_hashes_code_as_the_sensor_does():
    """The face repeats the sensor's hash (faces never import the sensor); equal on every code
    object of a real module, nested functions, classes and comprehensions included."""
    import funcsight.analysis.compare as module

    with open(module.__file__) as handle:
        code = compile(handle.read(), module.__file__, "exec", dont_inherit=True)
    codes = list(_codes(code))
    assert len(codes) > 20
    for c in codes:
        assert lsp_hash(c) == sensor_hash(c)
