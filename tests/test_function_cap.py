"""Functions past ``FUNCSIGHT_MAX_FUNCTIONS``: their calls are counted, not lost.

Code the registry has no room for gets the id of an overflow pseudo function (``(overflow)``, and
one each for generators and coroutines: their bookkeeping differs), so its calls land per request
under that name; the registry counts the code objects that got it. Both sensors, with the front
end of the running Python (``sys.monitoring`` on 3.12+, the import-time rewriter on 3.11).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import itertools
import os
import sys

import pytest

from funcsight import names
from funcsight.config import Config
from funcsight.instrumentation import csensor
from funcsight.instrumentation.calls import current_request
from funcsight.instrumentation.registry import FunctionInfo, FunctionRegistry, GENERATOR, PLAIN
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.sensor import make_sensor

REQUIRE_C = os.environ.get("FUNCSIGHT_REQUIRE_C") == "1"
_names = itertools.count()

MODULE = '''
import asyncio


def plain_{i}(x):
    return x + {i}


def gen_{i}(n):
    for k in range(n):
        yield k


async def coro_{i}():
    await asyncio.sleep(0)
    return {i}


def driver(count):
    """Registered first: calls every plain function of this module ``count`` times."""
    total = 0
    for _ in range(count):
        total += plain_{i}(1)
    return total
'''


@pytest.fixture(params=["python", "c"])
def impl(request) -> str:
    if request.param == "c" and not csensor.available():
        if REQUIRE_C:
            pytest.fail(f"FUNCSIGHT_REQUIRE_C=1 but the C sensor is not built: {csensor.UNAVAILABLE}")
        pytest.skip(csensor.UNAVAILABLE)
    return request.param


def test_the_registry_gives_code_past_the_cap_an_overflow_id_per_kind():
    registry = FunctionRegistry(max_functions=2)
    a = registry.register(FunctionInfo("m.a", "function"))
    b = registry.register(FunctionInfo("m.b", "function"))
    c = registry.register(FunctionInfo("m.c", "function"))
    d = registry.register(FunctionInfo("m.d", "function"))
    g = registry.register(FunctionInfo("m.g", "function"), GENERATOR)
    span = registry.register_span("SELECT")
    assert (a, b) == (0, 1)
    assert c == d == 2 and registry.functions[c].name == names.OVERFLOW_FUNCTION
    assert registry.functions[g].name == names.OVERFLOW_GENERATORS and g == 3
    assert registry.functions[span].name == names.OVERFLOW_FUNCTION and registry.functions[span].kind == "span"
    assert registry.dropped == 4  # c, d, g and the span name
    assert [registry.is_overflow(fid) for fid in range(5)] == [False, False, True, True, True]
    assert registry.register(FunctionInfo("m.a", "function")) == 0  # known names keep their id
    assert registry.register(FunctionInfo("m.e", "function"), PLAIN) == 2
    assert registry.dropped == 5


def test_calls_past_the_cap_add_up_under_the_overflow_functions(impl, tmp_path, monkeypatch):
    """40 modules of 4 functions each under a cap of 10: every call is in some table entry, the
    overflow entries hold exactly the calls of the functions that found no room."""
    monkeypatch.syspath_prepend(str(tmp_path))
    prefix = f"fs_cap_{impl}_{next(_names)}"
    modules = 40
    for i in range(modules):
        (tmp_path / f"{prefix}_{i}.py").write_text(MODULE.format(i=i))
    importlib.invalidate_caches()
    config = Config(include=(f"{prefix}_*",), implementation=impl)
    registry = FunctionRegistry(max_functions=10)
    sensor = make_sensor(config, registry, CodeSelector(config))
    sink = sensor.sink
    request = sink.new_table()
    sensor.start()
    token = current_request.set(request)
    try:
        loaded = [importlib.import_module(f"{prefix}_{i}") for i in range(modules)]
        for i, module in enumerate(loaded):
            assert module.driver(3) == 3 * (1 + i)
            assert list(getattr(module, f"gen_{i}")(4)) == [0, 1, 2, 3]
            assert asyncio.run(getattr(module, f"coro_{i}")()) == i
    finally:
        current_request.reset(token)
        sensor.stop()
        for i in range(modules):
            sys.modules.pop(f"{prefix}_{i}", None)
    tables = (request, sink.background)  # asyncio.run's own calls are in the request too

    def calls(kind: str) -> int:
        fids = [fid for fid, info in enumerate(registry.functions) if info.name.startswith(f"{prefix}_") and
                info.name.rsplit(".", 1)[1].startswith(kind)]
        return sum(table.stats[fid][0] for table in tables for fid in fids if fid in table.stats)

    def overflow(name: str) -> int:
        fid = next(fid for fid, info in enumerate(registry.functions) if info.name == name)
        assert registry.is_overflow(fid)
        return sum(table.stats.get(fid, [0])[0] for table in tables)

    sensed = len(registry) - 3  # three overflow functions
    assert sensed == 10
    assert calls("driver") + calls("plain_") + overflow(names.OVERFLOW_FUNCTION) == modules * (1 + 3)
    assert calls("gen_") + overflow(names.OVERFLOW_GENERATORS) == modules
    assert calls("coro_") + overflow(names.OVERFLOW_COROUTINES) == modules
    assert registry.dropped == 4 * modules - 10  # every function of every module, less the 10 registered
    assert sensor.internal_errors == 0
    # The call tree holds them too: the overflow function's nodes add up to its calls.
    fid = registry.lookup(names.OVERFLOW_FUNCTION)
    at_nodes = sum(counts[0] for table in tables for node, counts in table.paths.items()
                   if sensor.paths.path_of(node)[-1] == fid)
    assert at_nodes == overflow(names.OVERFLOW_FUNCTION)


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="exec'd code is not rewritten on 3.11")
def test_overflow_code_made_at_run_time_can_be_freed(impl):
    """The Python sensor keeps registered code alive (its id() keys the hot path); code past the
    cap it holds weakly, so functions made and dropped at run time do not pile up."""
    config = Config(include=("fs_runtime_*",), implementation=impl)
    registry = FunctionRegistry(max_functions=1)
    sensor = make_sensor(config, registry, CodeSelector(config))
    sensor.start()
    try:
        total = 0
        for i in range(300):
            namespace = {"__name__": "fs_runtime_mod"}
            exec(f"def f{i}(x):\n    return x + 1\n", namespace)
            total += namespace[f"f{i}"](i)
            del namespace
        gc.collect()
    finally:
        sensor.stop()
    fid = registry.lookup(names.OVERFLOW_FUNCTION)
    assert total == sum(range(1, 301))
    assert sensor.sink.background.stats[0][0] + sensor.sink.background.stats[fid][0] == 300
    assert registry.dropped == 299
    if impl == "python":
        assert len(sensor._overflow_codes) < 10
