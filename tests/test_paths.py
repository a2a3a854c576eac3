"""Execution paths: the call tree the sensor records, on both implementations, and on real apps.

In-process: a module with a known call structure is imported under a sensor of each
implementation (with the front end of the running Python), called inside one request table, and
the table's path nodes are read back as paths of function names. Then real Flask and FastAPI apps
under ``opentelemetry-instrument``: the tree read through ``funcsight tree`` has exactly the nodes
their code makes, and every function's calls equal the sum over its nodes.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json

import jsonschema
import pytest
from helpers import assert_functions_are_sums_of_nodes, cli_ok, get_ok, outside_table, store_env, tree_nodes

from funcsight.config import Config
from funcsight.instrumentation.calls import enter_request, leave_request
from funcsight.instrumentation.paths import OTHER
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector
from funcsight.instrumentation.sensor import make_sensor
from funcsight.processors.windows import make_windows
from test_sensor import _require

_names = itertools.count()

TREE = '''
import asyncio


def shared(x):
    return x + 1


def left(n):
    return shared(n) + shared(n + 1)


def right(n):
    return shared(n)


def view(n):
    return left(n) + right(n)


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def ping(n):
    return n if n <= 0 else pong(n - 1)


def pong(n):
    return n if n <= 0 else ping(n - 1)


def deep3():
    raise KeyError("x")


def deep2():
    deep3()


def deep1():
    try:
        deep2()
    except KeyError:
        return "caught"


def numbers(n):
    for i in range(n):
        yield shared(i)


def consume(n):
    return sum(numbers(n))


async def inner(x):
    await asyncio.sleep(0)
    return shared(x)


async def outer(x):
    return await inner(x) + await inner(x + 1)


def chain(depth):
    return depth if depth <= 0 else chain_step(depth)


def chain_step(depth):
    return chain(depth - 1)


class Pager:
    def __init__(self, n):
        self.source = iter(range(n))

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.source)  # passes the source's StopIteration on: the end, not an error


def read_pages(n):
    return list(Pager(n))


def pooled(n):
    return shared(n)


def submitter(pool, n):
    return [future.result() for future in [pool.submit(pooled, i) for i in range(n)]]


def lookup(table, key):
    return table[key]


def safe_lookup(key):
    try:
        return lookup({}, key)
    except KeyError:
        return None
'''


@pytest.fixture(params=["python", "c"])
def impl(request) -> str:
    _require(request.param)
    return request.param


class TreeHarness:
    def __init__(self, impl: str, directory, sample_error=None, **config):
        self.name = f"fs_tree_{impl}_{next(_names)}"
        cfg = Config(include=("fs_tree_*",), implementation=impl, **config)
        self.registry = FunctionRegistry()
        extra = {"sample_error": sample_error} if sample_error is not None else {}
        self.sensor = make_sensor(cfg, self.registry, CodeSelector(cfg), **extra)
        (directory / f"{self.name}.py").write_text(TREE)
        importlib.invalidate_caches()
        self.sensor.start()
        self.mod = importlib.import_module(self.name)

    def run(self, work) -> object:
        """``work()`` inside one request: its call table."""
        table = self.sensor.sink.new_table()
        token = enter_request(table)
        try:
            work()
        finally:
            leave_request(token)
        return table

    def nodes(self, table) -> dict[tuple[str, ...], list]:
        """Path (short function names) -> [calls, errors, total, self]."""
        prefix = self.name + "."
        names = {fid: info.name.removeprefix(prefix) for fid, info in enumerate(self.registry.functions)}
        out = {}
        for node, counts in table.paths.items():
            path = tuple("(other paths)" if f == OTHER else names[f] for f in self.sensor.paths.path_of(node))
            out[path] = list(counts[:4])
        return out

    def calls(self, table) -> dict[str, int]:
        prefix = self.name + "."
        return {self.registry.functions[fid].name.removeprefix(prefix): s[0] for fid, s in table.stats.items()}

    def stop(self) -> None:
        self.sensor.stop()
        if getattr(self, "restore_sampler", False):  # the C sensor's sampler is module-wide
            from funcsight.instrumentation import _csensor
            from funcsight.instrumentation.calls import stack_sample

            _csensor.set_stack_sampler(stack_sample)


@pytest.fixture
def harness(impl, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def factory(**config) -> TreeHarness:
        h = TreeHarness(impl, tmp_path, **config)
        h.restore_sampler = impl == "c" and "sample_error" in config
        made.append(h)
        return h

    yield factory
    for h in made:
        h.stop()


def _calls(nodes: dict) -> dict:
    return {path: counts[0] for path, counts in nodes.items()}


def _sum_by_function(nodes: dict) -> dict:
    total: dict[str, int] = {}
    for path, counts in nodes.items():
        total[path[-1]] = total.get(path[-1], 0) + counts[0]
    return total


def test_a_helper_under_two_callers_has_two_nodes(harness):
    h = harness()
    table = h.run(lambda: [h.mod.view(i) for i in range(5)])
    nodes = h.nodes(table)
    assert _calls(nodes) == {
        ("view",): 5,
        ("view", "left"): 5,
        ("view", "left", "shared"): 10,
        ("view", "right"): 5,
        ("view", "right", "shared"): 5,
    }
    assert _sum_by_function(nodes) == h.calls(table)  # the function figures are the nodes' sums
    # Times add up: a node's total is its self time plus its children's totals (exactly, in ns).
    view, left, right = nodes[("view",)], nodes[("view", "left")], nodes[("view", "right")]
    assert view[2] == view[3] + left[2] + right[2]
    assert left[2] == left[3] + nodes[("view", "left", "shared")][2]


def test_recursion_is_folded_into_the_ancestor(harness):
    h = harness()
    table = h.run(lambda: (h.mod.fact(6), h.mod.ping(5)))
    assert _calls(h.nodes(table)) == {
        ("fact",): 6,  # fact(6) .. fact(1): one node, every level counted
        ("ping",): 3,  # ping(5), ping(3), ping(1)
        ("ping", "pong"): 3,  # pong(4), pong(2), pong(0)
    }
    assert _sum_by_function(h.nodes(table)) == h.calls(table)


def test_an_exception_unwinding_three_levels_counts_at_each_node(harness):
    h = harness()
    table = h.run(lambda: [h.mod.deep1() for _ in range(4)])
    nodes = h.nodes(table)
    assert {path: counts[:2] for path, counts in nodes.items()} == {
        ("deep1",): [4, 0],  # caught here
        ("deep1", "deep2"): [4, 4],
        ("deep1", "deep2", "deep3"): [4, 4],
    }
    by_type = {(h.sensor.paths.path_of(node)[-1], exc.__name__): n for (node, exc), n in table.path_errors.items()}
    assert by_type == {(h.registry.lookup(f"{h.name}.deep2"), "KeyError"): 4,
                       (h.registry.lookup(f"{h.name}.deep3"), "KeyError"): 4}


def test_generators_and_coroutines_nest_under_their_consumer_and_awaiter(harness):
    h = harness()
    table = h.run(lambda: (h.mod.consume(4), asyncio.run(h.mod.outer(1))))
    assert _calls(h.nodes(table)) == {
        ("consume",): 1,
        ("consume", "numbers"): 1,  # one invocation, first entry to final exit
        ("consume", "numbers", "shared"): 4,
        ("outer",): 1,
        ("outer", "inner"): 2,
        ("outer", "inner", "shared"): 2,
    }


def test_depth_cap_folds_deeper_calls_into_one_node(harness):
    h = harness(max_path_depth=3)
    table = h.run(lambda: h.mod.chain(5))
    # chain -> chain_step -> (chain: recursion, folded) ...: the tree stays two levels deep.
    assert _calls(h.nodes(table)) == {("chain",): 6, ("chain", "chain_step"): 5}


def test_calls_below_the_depth_cap_land_in_one_other_paths_node(harness):
    h = harness(max_path_depth=2)
    table = h.run(lambda: [h.mod.view(1) for _ in range(2)])
    assert _calls(h.nodes(table)) == {
        ("view",): 2, ("view", "left"): 2, ("view", "right"): 2,
        ("view", "left", "(other paths)"): 4, ("view", "right", "(other paths)"): 2,
    }
    assert sum(c for p, c in _calls(h.nodes(table)).items() if p[-1] == "(other paths)") == h.calls(table)["shared"]


def test_the_end_of_an_iteration_is_control_flow_not_an_error(harness):
    h = harness()
    table = h.run(lambda: (h.mod.read_pages(3), h.mod.safe_lookup("k")))
    nodes = h.nodes(table)
    assert {path: counts[:2] for path, counts in nodes.items()} == {
        ("read_pages",): [1, 0],
        ("read_pages", "Pager.__init__"): [1, 0],
        ("read_pages", "Pager.__iter__"): [1, 0],
        ("read_pages", "Pager.__next__"): [4, 0],  # the 4th call ended the iteration: no error
        ("safe_lookup",): [1, 0],
        ("safe_lookup", "lookup"): [1, 1],  # a real exception, caught by its caller: still counted
    }


def test_a_failing_stack_sampler_never_reaches_the_application(harness):
    """The application sees its own exception, the call is counted, the failure is counted."""

    def broken_sampler(exc):
        raise RuntimeError("sampler bug")

    h = harness(sample_error=broken_sampler)
    core = getattr(h.sensor, "core", h.sensor)
    before = core.internal_errors
    table = h.run(lambda: [h.mod.safe_lookup("k") for _ in range(3)])
    assert {path: counts[:2] for path, counts in h.nodes(table).items()} == {
        ("safe_lookup",): [3, 0], ("safe_lookup", "lookup"): [3, 3]}
    assert core.internal_errors - before == 1  # one sample is taken per function x type per request


def test_work_handed_to_a_thread_pool_stays_under_the_call_that_submitted_it(harness):
    from concurrent.futures import ThreadPoolExecutor

    from funcsight.agent import threads

    h = harness()
    threads.install(h.sensor)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            table = h.run(lambda: h.mod.submitter(pool, 3))
            background = h.run(lambda: None)  # a later request: the pool threads are back at the root
            pool.submit(h.mod.pooled, 1).result()  # outside any request
    finally:
        threads.uninstall()
    assert _calls(h.nodes(table)) == {
        ("submitter",): 1, ("submitter", "pooled"): 3, ("submitter", "pooled", "shared"): 3}
    assert h.nodes(background) == {}
    outside = outside_table(h.sensor.sink.background, h.sensor.take_all_held())
    assert _calls(h.nodes(outside)) == {("pooled",): 1, ("pooled", "shared"): 1}


@pytest.mark.parametrize("window_impl", ["python", "c"])
def test_the_route_cap_folds_new_nodes_into_other_paths_and_counts_them(harness, window_impl):
    h = harness()
    windows = make_windows(implementation=window_impl, paths=h.sensor.paths, max_paths=3)
    windows.add_request("/r", h.run(lambda: h.mod.view(1)), 1000, False)
    windows.add_request("/r", h.run(lambda: h.mod.consume(2)), 1000, False)
    window = windows.drain()
    name = {fid: info.name.removeprefix(h.name + ".") for fid, info in enumerate(h.registry.functions)}
    got = {tuple("(other paths)" if f == OTHER else name[f] for f in path): counts[0]
           for (route, path), counts in window.paths.items()}
    # The first three nodes of the first request are kept (in the order the table holds them);
    # every later new node lands in the (other paths) child of its deepest kept ancestor.
    kept = {path: n for path, n in got.items() if "(other paths)" not in path}
    assert len(kept) == 3
    assert sum(got.values()) == 10  # every call is still counted: view(1) makes 6 calls, consume(2) 4
    assert window.counters.overflow_paths == 8 - 3  # 8 distinct nodes, 3 kept
    functions = {name[fid]: stats[0] for (fid, route), stats in window.functions.items()}
    assert functions == {"view": 1, "left": 1, "right": 1, "shared": 5, "consume": 1, "numbers": 1}


# ------------------------------------------------------------------------------------ real apps
def test_flask_app_tree_has_exactly_the_nodes_its_code_makes(start_app, tmp_path):
    n = 12
    db = tmp_path / "funcsight.db"
    app = start_app("flask_shop", store_env(db, "flask-shop", "1.0"))
    for i in range(n):
        assert get_ok(app.port, f"/items/{i}")["qty"] == 1
        assert get_ok(app.port, f"/stock/{i}")["status"] == "out_of_stock"
    app.stop()
    V, L = "shopapp.views.", "shopapp.logic."
    items = tree_nodes(db, "/items/<int:item_id>")
    assert {path: node["calls_per_request"] for path, node in items.items()} == {
        (V + "get_item",): 1.0,
        (V + "get_item", L + "Catalog.lookup"): 1.0,
        (V + "get_item", L + "price_with_tax"): 1.0,
        (V + "get_item", L + "price_with_tax", L + "price_with_tax.<locals>.round_cents"): 1.0,
        (V + "get_item", L + "normalize"): 3.0,
        (V + "get_item", L + "iter_tags"): 1.0,
        (V + "get_item", L + "parse_qty"): 1.0,
    }
    assert items[(V + "get_item", L + "parse_qty")]["errors_by_type"] == {"ValueError": n}
    assert items[(V + "get_item",)]["errors"] == 0  # it caught the ValueError
    assert items[(V + "get_item",)]["file"].endswith("views.py") and items[(V + "get_item",)]["line"] > 0
    stock = tree_nodes(db, "/stock/<int:item_id>")
    assert {path: (node["calls_per_request"], node["errors"]) for path, node in stock.items()} == {
        (V + "stock",): (1.0, 0),
        (V + "stock", L + "reserve"): (1.0, n),  # OutOfStock unwinds through it
        (V + "stock", L + "reserve", L + "check_level"): (1.0, n),
    }
    assert_functions_are_sums_of_nodes(db)
    # Collapsed stacks for flamegraph.pl / Pyroscope: one line per node with self time, the
    # route first, integer weights.
    folded = cli_ok("tree", "--db", str(db), "--route", "/stock/<int:item_id>", "--format", "folded").splitlines()
    stacks = {line.rsplit(" ", 1)[0] for line in folded}
    assert f"/stock/<int:item_id>;{V}stock;{L}reserve;{L}check_level" in stacks
    assert all(line.rsplit(" ", 1)[1].isdigit() for line in folded)
    # speedscope's own file-format schema (shipped in its npm package) accepts the export, and the
    # samples' weights are the tree's self times.
    schema = _speedscope_schema(tmp_path)
    document = json.loads(cli_ok("tree", "--db", str(db), "--route", "/stock/<int:item_id>", "--format", "speedscope"))
    jsonschema.validate(document, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**document, "profiles": [{"type": "sampled"}]}, schema)
    profile = document["profiles"][0]
    assert profile["unit"] == "microseconds" and sum(profile["weights"]) == profile["endValue"]
    frames = [frame["name"] for frame in document["shared"]["frames"]]
    stacks = {tuple(frames[i] for i in sample) for sample in profile["samples"]}
    assert ("/stock/<int:item_id>", V + "stock", L + "reserve", L + "check_level") in stacks


SPEEDSCOPE = "speedscope@1.25.0"


def _speedscope_schema(tmp_path) -> dict:
    """speedscope's file-format-schema.json, from its npm package (``npm pack``)."""
    import os
    import shutil
    import subprocess
    import tarfile

    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI"):
            pytest.fail("npm is needed to fetch speedscope's file-format schema (.ci/run installs it)")
        pytest.skip("npm not installed: cannot fetch speedscope's file-format schema")
    done = subprocess.run([npm, "pack", SPEEDSCOPE, "--silent"], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / done.stdout.strip().splitlines()[-1]) as archive:
        return json.load(archive.extractfile("package/dist/release/file-format-schema.json"))


def test_fastapi_app_tree_nests_awaited_coroutines_under_their_awaiter(start_app, tmp_path):
    n = 10
    db = tmp_path / "funcsight.db"
    app = start_app("fastapi_shop", store_env(db, "fastapi-shop", "1.0"))
    for i in range(n):
        assert get_ok(app.port, f"/items/{i}")["qty"] == 1
        assert get_ok(app.port, f"/stock/{i}")["status"] == "out_of_stock"
    app.stop()
    M, L = "fastshop.main.", "fastshop.logic."
    items = tree_nodes(db, "/items/{item_id}")
    assert {path: node["calls_per_request"] for path, node in items.items()} == {
        (M + "get_item",): 1.0,
        (M + "get_item", L + "fetch_item"): 1.0,  # awaited: under the coroutine that awaited it
        (M + "get_item", L + "fetch_item", L + "Catalog.lookup"): 1.0,
        (M + "get_item", L + "price_with_tax"): 1.0,
        (M + "get_item", L + "price_with_tax", L + "price_with_tax.<locals>.round_cents"): 1.0,
        (M + "get_item", L + "normalize"): 3.0,
        (M + "get_item", L + "iter_tags"): 1.0,
        (M + "get_item", L + "parse_qty"): 1.0,
    }
    stock = tree_nodes(db, "/stock/{item_id}")
    assert {path: (node["calls_per_request"], node["errors"]) for path, node in stock.items()} == {
        (M + "stock",): (1.0, 0),
        (M + "stock", L + "reserve"): (1.0, n),
        (M + "stock", L + "reserve", L + "check_level"): (1.0, n),
    }
    assert_functions_are_sums_of_nodes(db)
