"""The import-time rewriter (the Python 3.11 front end), tested on every Python: a real core (the
Python one, and the C one when it is built) and a real rewriter import small modules written to a
scratch directory (the sensed application), run them, and the numbers are read back from the
background call table."""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import inspect
import runpy
import sys
import textwrap
import threading
import traceback
from pathlib import Path
from types import CodeType

import pytest
from helpers import outside_table

from funcsight.config import Config
from funcsight.instrumentation._pysensor import COROUTINE, GENERATOR, PLAIN, PythonSensor
from funcsight.instrumentation.registry import FunctionRegistry, code_hash
from funcsight.instrumentation.rewrite import ImportRewriter
from funcsight.instrumentation.selection import CodeSelector

try:
    from funcsight.instrumentation import csensor
except ImportError:  # pragma: no cover - the C sensor is optional
    csensor = None

MS = 1_000_000
CORES = ["python"] + (["c"] if csensor is not None and csensor.available() else [])


class Env:
    def __init__(self, directory: Path, core: str, max_functions: int = 20_000):
        self.dir = directory
        self.registry = FunctionRegistry(max_functions)
        self.selector = CodeSelector(Config(app_dir=str(directory)))
        factory = csensor.CSensor if core == "c" else PythonSensor
        self.core = factory(self.registry, self.selector)
        self.sink = self.core.sink
        self.rewriter = ImportRewriter(self.core, self.selector)

    def write(self, relpath: str, source: str) -> Path:
        path = self.dir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"))
        importlib.invalidate_caches()
        return path

    def load(self, name: str, source: str):
        self.write(name.replace(".", "/") + ".py", source)
        return importlib.import_module(name)

    def fid(self, name: str) -> int:
        fid = self.registry.lookup(name)
        assert fid is not None, f"{name} not registered; have {[f.name for f in self.registry.functions]}"
        return fid

    def outside(self):
        """The background table with the tables threads held for enclosing calls (helpers.outside_table)."""
        self._held = getattr(self, "_held", []) + self.core.take_all_held()
        return outside_table(self.sink.background, self._held)

    def stats(self, name: str) -> list:
        return self.outside().stats.get(self.fid(name), [0, 0, 0, 0, {}])

    def calls(self, name: str) -> int:
        return self.stats(name)[0]

    def errors(self, name: str) -> dict[type, int]:
        fid = self.fid(name)
        return {exc: n for (f, exc), n in self.outside().errors.items() if f == fid}

    def stack(self) -> list[int]:
        """The function ids in flight on this thread, bottom first."""
        if self.core.implementation == "c":
            return list(self.core._core.stack_fids())
        return [entry[0] for entry in getattr(self.core._tls, "stack", [])]


def _env(tmp_path: Path, monkeypatch, **kwargs):
    env = Env(tmp_path, **kwargs)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    env.rewriter.install()
    try:
        yield env
    finally:
        env.rewriter.uninstall()
        for name in set(sys.modules) - before:
            del sys.modules[name]


@pytest.fixture(params=CORES)
def env(request, tmp_path, monkeypatch):
    yield from _env(tmp_path, monkeypatch, core=request.param)


@pytest.fixture(params=CORES)
def small_env(request, tmp_path, monkeypatch):
    yield from _env(tmp_path, monkeypatch, core=request.param, max_functions=2)


def _code_of(source: str, path: Path, qualname: str) -> CodeType:
    """The first code object named ``qualname`` (definition order) in ``source`` compiled as is."""

    def walk(code: CodeType):
        for const in code.co_consts:
            if isinstance(const, CodeType):
                yield const
                yield from walk(const)

    module = compile(textwrap.dedent(source).lstrip("\n"), str(path), "exec", dont_inherit=True)
    return next(code for code in walk(module) if code.co_qualname == qualname)


# ------------------------------------------------------------------------------ plain functions
def test_calls_errors_and_caught_exceptions_are_exact(env):
    m = env.load("m_plain", """
        def add(a, b):
            return a + b

        def boom(kind):
            raise kind("boom")

        def safe():
            try:
                boom(ValueError)
            except ValueError:
                return "caught"

        def unsafe():
            boom(KeyError)
    """)
    assert [m.add(i, 1) for i in range(100)][-1] == 100
    assert [m.safe() for _ in range(3)] == ["caught"] * 3
    with pytest.raises(KeyError):
        m.unsafe()
    assert env.stats("m_plain.add")[:2] == [100, 0]
    assert env.stats("m_plain.boom")[:2] == [4, 4]
    assert env.errors("m_plain.boom") == {ValueError: 3, KeyError: 1}
    assert env.stats("m_plain.safe")[:2] == [3, 0] and env.errors("m_plain.safe") == {}
    assert env.errors("m_plain.unsafe") == {KeyError: 1}
    assert env.stack() == [] and env.core.internal_errors == 0


def test_recursion_counts_every_call_and_self_time_stays_within_duration(env):
    m = env.load("m_fib", """
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
    """)
    assert m.fib(10) == 55
    calls, errors, total, self_ns, hist = env.stats("m_fib.fib")
    assert (calls, errors, sum(hist.values())) == (177, 0, 177)
    assert 0 <= self_ns <= total


def test_qualnames_lines_and_hashes_are_those_of_cpython(env):
    source = """
        import functools

        def deco(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)
            return wrapper

        class Shop:
            class Cart:
                def total(self):
                    return 3

            def __secret(self):
                return 1

            def reveal(self):
                return self.__secret()

            @staticmethod
            def tax(x):
                return x * 2

            @classmethod
            def make(cls):
                return cls()

            @property
            def size(self):
                return self._size

            @size.setter
            def size(self, value):
                self._size = value

            @deco
            def decorated(
                self,
            ):
                return "d"

        def factory():
            class Local:
                def method(self):
                    return "local"
            def helper():
                def deepest():
                    return 7
                return deepest()
            return Local().method(), helper()

        def declares_global():
            global late
            def late():
                return "late"
            return late()

        async def fetch():
            return 1

        def gen():
            yield 1

        async def agen():
            yield 1
    """
    m = env.load("m_names", source)
    shop = m.Shop.make()
    shop.size = 4
    assert (shop.Cart().total(), shop.reveal(), m.Shop.tax(2), shop.size, shop.decorated()) == (3, 1, 4, 4, "d")
    assert m.factory() == ("local", 7) and m.declares_global() == "late"
    asyncio.run(m.fetch())
    list(m.gen())
    expected = {
        "deco": PLAIN, "deco.<locals>.wrapper": PLAIN, "Shop.Cart.total": PLAIN, "Shop.__secret": PLAIN,
        "Shop.reveal": PLAIN, "Shop.tax": PLAIN, "Shop.make": PLAIN, "Shop.size": PLAIN,
        "Shop.decorated": PLAIN, "factory": PLAIN, "factory.<locals>.Local.method": PLAIN,
        "factory.<locals>.helper": PLAIN, "factory.<locals>.helper.<locals>.deepest": PLAIN,
        "declares_global": PLAIN, "late": PLAIN, "fetch": COROUTINE, "gen": GENERATOR, "agen": GENERATOR,
    }
    path = env.dir / "m_names.py"
    assert sorted(f.name for f in env.registry.functions) == sorted(f"m_names.{q}" for q in expected)
    for qualname, kind in expected.items():
        fid = env.fid(f"m_names.{qualname}")
        info, code = env.registry.functions[fid], _code_of(source, path, qualname)
        assert (info.file, info.line, info.code_hash) == (str(path), code.co_firstlineno, code_hash(code)), qualname
        assert env.core.kinds[fid] == kind and info.is_generator == (kind != PLAIN), qualname
    # Getter and setter share CPython's qualname, hence one identity; decorated: the wrapper and the function.
    assert env.calls("m_names.Shop.size") == 2
    assert env.calls("m_names.deco.<locals>.wrapper") == 1 and env.calls("m_names.Shop.decorated") == 1
    assert env.calls("m_names.Shop.tax") == 1 and env.calls("m_names.Shop.make") == 1
    assert env.calls("m_names.Shop.__secret") == 1 and env.calls("m_names.late") == 1
    assert env.calls("m_names.factory.<locals>.helper.<locals>.deepest") == 1
    assert inspect.isasyncgenfunction(m.agen) and inspect.iscoroutinefunction(m.fetch)
    assert inspect.isgeneratorfunction(m.gen) and not inspect.isgeneratorfunction(m.factory)


def test_functions_registered_by_a_decorator_at_definition_time_are_counted(env):
    m = env.load("m_routes", """
        ROUTES = {}

        def route(path):
            def register(fn):
                ROUTES[path] = fn
                return fn
            return register

        @route("/a")
        def handler_a(n):
            return n + 1

        @route("/b")
        def handler_b():
            return "b"
    """)
    assert sum(m.ROUTES["/a"](i) for i in range(5)) == 15 and m.ROUTES["/b"]() == "b"
    assert env.calls("m_routes.handler_a") == 5 and env.calls("m_routes.handler_b") == 1
    assert env.calls("m_routes.route") == 2 and env.calls("m_routes.route.<locals>.register") == 2


def test_closures_nonlocal_global_docstrings_and_future_annotations_keep_working(env):
    m = env.load("m_scopes", '''
        """Module doc."""
        from __future__ import annotations

        TOTAL = 0

        def counter():
            """Counts."""
            n = 0
            def bump(by: int) -> int:
                "Bumps."
                nonlocal n
                n += by
                return n
            return bump

        def add_total(x):
            global TOTAL
            TOTAL += x
            return TOTAL

        def only_doc():
            """Nothing else."""
    ''')
    bump = m.counter()
    assert [bump(2) for _ in range(3)] == [2, 4, 6]
    assert [m.add_total(5) for _ in range(2)] == [5, 10] and m.TOTAL == 10
    assert m.only_doc() is None
    docs = (m.__doc__, m.counter.__doc__, bump.__doc__, m.only_doc.__doc__)
    assert docs == ("Module doc.", "Counts.", "Bumps.", "Nothing else.")
    assert bump.__annotations__ == {"by": "int", "return": "int"}
    assert env.calls("m_scopes.counter.<locals>.bump") == 3 and env.calls("m_scopes.add_total") == 2
    assert env.calls("m_scopes.only_doc") == 1


# ---------------------------------------------------------------------------------- generators
def test_generators_count_one_call_per_invocation(env):
    m = env.load("m_gen", """
        def count(n):
            for i in range(n):
                yield i

        def echo():
            got = None
            while True:
                got = yield got

        def guarded():
            try:
                yield 1
                yield 2
            except ValueError:
                yield "handled"

        def delegating():
            result = yield from count(3)
            return result
    """)
    assert sum(m.count(100)) == 4950 and list(m.count(0)) == []
    early = m.count(10)
    assert next(early) == 0
    early.close()
    m.count(5)  # never started: never entered (3.12 does not count it either)
    e = m.echo()
    next(e)
    assert [e.send(i) for i in range(5)] == list(range(5))
    e.close()
    g = m.guarded()
    assert next(g) == 1 and g.throw(ValueError) == "handled"
    with pytest.raises(KeyError):
        g.throw(KeyError)
    assert list(m.delegating()) == [0, 1, 2]
    assert env.stats("m_gen.count")[:2] == [4, 0]
    assert env.stats("m_gen.echo")[:2] == [1, 0]
    assert env.stats("m_gen.guarded")[:2] == [1, 1] and env.errors("m_gen.guarded") == {KeyError: 1}
    assert env.calls("m_gen.delegating") == 1
    assert env.stack() == [] and env.core.internal_errors == 0


def test_a_generator_is_off_the_stack_while_its_consumer_runs(env):
    m = env.load("m_gen_self", """
        import time

        def slow():
            time.sleep(0.02)

        def produce():
            yield 1
            yield 2

        def consume():
            out = []
            for item in produce():
                slow()
                out.append(item)
            return out

        def closes_early():
            gen = produce()
            next(gen)
            time.sleep(0.02)  # the consumer's own time, while the generator is suspended
            gen.close()
    """)
    assert m.consume() == [1, 2]
    produce, consume = env.stats("m_gen_self.produce"), env.stats("m_gen_self.consume")
    assert produce[0] == 1 and produce[2] >= 40 * MS  # first entry to final exit
    assert produce[3] < 10 * MS  # the consumer's sleeps are not the generator's own time
    assert consume[2] >= 40 * MS and consume[3] < 10 * MS
    m.closes_early()
    assert env.stats("m_gen_self.produce")[:2] == [2, 0] and env.stats("m_gen_self.produce")[3] < 10 * MS
    assert env.stats("m_gen_self.closes_early")[3] >= 20 * MS  # closing credits it almost nothing
    assert env.stack() == []


# ---------------------------------------------------------------------------------------- async
ASYNC_APP = """
    import asyncio

    PROBE = None
    SEEN = []

    async def leaf(i):
        await asyncio.sleep(0)
        return i

    async def mid(i):
        a = await leaf(i)
        await asyncio.sleep(0)
        return a + await leaf(i)

    async def main(n):
        return sum(await asyncio.gather(*(mid(i) for i in range(n))))

    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    class Session:
        async def __aenter__(self):
            await asyncio.sleep(0)
            return self

        async def __aexit__(self, *exc):
            await asyncio.sleep(0)
            return False

    async def worker(tag):
        SEEN.append((tag, PROBE()))
        async with Session():
            SEEN.append((tag, PROBE()))
            async for i in ticks(3):
                SEEN.append((tag, PROBE()))
            values = [await leaf(i) async for i in ticks(2)]
            SEEN.append((tag, PROBE()))
        SEEN.append((tag, PROBE()))
        return values
"""


def test_async_gather_of_many_tasks_counts_exactly_and_leaves_the_stack_empty(env):
    m = env.load("m_async", ASYNC_APP)
    assert asyncio.run(m.main(300)) == 2 * sum(range(300))
    assert env.calls("m_async.main") == 1
    assert env.calls("m_async.mid") == 300 and env.calls("m_async.leaf") == 600
    assert env.stack() == [] and env.core.internal_errors == 0


def test_interleaved_tasks_never_see_each_other_on_the_stack(env):
    m = env.load("m_async2", ASYNC_APP)
    m.PROBE = env.stack

    async def run():
        return await asyncio.gather(*(m.worker(t) for t in range(4)))

    assert asyncio.run(run()) == [[0, 1]] * 4
    worker = env.fid("m_async2.worker")
    assert len(m.SEEN) == 4 * 7
    assert all(stack == [worker] for _, stack in m.SEEN), m.SEEN
    assert [tag for tag, _ in m.SEEN[:4]] == [0, 1, 2, 3]  # they did interleave
    assert env.calls("m_async2.worker") == 4 and env.calls("m_async2.ticks") == 8
    assert env.calls("m_async2.Session.__aenter__") == 4 and env.calls("m_async2.Session.__aexit__") == 4
    assert env.calls("m_async2.leaf") == 8
    assert env.stack() == [] and env.core.internal_errors == 0


def test_cancellation_closing_and_errors_in_async_code(env):
    m = env.load("m_async3", """
        import asyncio

        async def forever():
            await asyncio.sleep(10)

        async def fails():
            await asyncio.sleep(0)
            raise LookupError("no")

        async def numbers():
            for i in range(100):
                yield i

        async def first_of_numbers():
            agen = numbers()
            async for i in agen:
                await agen.aclose()
                return i

        async def main():
            task = asyncio.ensure_future(forever())
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            try:
                await asyncio.wait_for(forever(), 0.01)
            except asyncio.TimeoutError:
                pass
            try:
                await fails()
            except LookupError:
                pass
            return await first_of_numbers()
    """)
    assert asyncio.run(m.main()) == 0
    assert env.stats("m_async3.forever")[:2] == [2, 2]
    assert env.errors("m_async3.forever") == {asyncio.CancelledError: 2}
    assert env.errors("m_async3.fails") == {LookupError: 1}
    assert env.stats("m_async3.numbers")[:2] == [1, 0]
    assert env.stats("m_async3.main")[:2] == [1, 0]
    assert env.stack() == [] and env.core.internal_errors == 0


def test_awaited_coroutines_are_credited_to_their_awaiter(env):
    m = env.load("m_async_self", """
        import asyncio

        PASSTHROUGH = None

        async def inner():
            await asyncio.sleep(0.02)

        async def outer():
            await inner()

        async def via_library():
            await PASSTHROUGH(inner())
    """)

    async def passthrough(coro):  # an unsensed library coroutine between the two (this file)
        return await coro

    m.PASSTHROUGH = passthrough
    asyncio.run(m.outer())
    inner, outer = env.stats("m_async_self.inner"), env.stats("m_async_self.outer")
    assert inner[3] >= 19 * MS and outer[2] >= 19 * MS
    assert outer[3] < 10 * MS
    asyncio.run(m.via_library())
    via = env.stats("m_async_self.via_library")
    assert via[2] >= 19 * MS and via[3] < 10 * MS
    assert env.stack() == []


# --------------------------------------------------------------------------------- concurrency
def test_threads_count_exactly(env):
    m = env.load("m_threads", """
        def work(i):
            return i * 2

        def loop(n):
            return sum(work(i) for i in range(n))
    """)
    barrier = threading.Barrier(8)
    results, stacks = [], []

    def run():
        barrier.wait()
        results.append(m.loop(1000))
        stacks.append(list(env.stack()))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [999_000] * 8 and stacks == [[]] * 8
    assert env.calls("m_threads.work") == 8000 and env.calls("m_threads.loop") == 8


def test_self_time_excludes_a_sleeping_callee(env):
    m = env.load("m_self", """
        import time

        def callee():
            time.sleep(0.02)

        def caller():
            callee()
    """)
    m.caller()
    caller, callee = env.stats("m_self.caller"), env.stats("m_self.callee")
    assert callee[3] >= 20 * MS and callee[3] <= callee[2]
    assert caller[2] >= 20 * MS and caller[3] < 10 * MS


# ------------------------------------------------------------------------------- import details
def test_rewritten_code_is_never_cached_and_tracebacks_point_at_the_source(env, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # so a cache file could be written
    source = """
        def fail():
            x = 1
            raise RuntimeError("here")

        @staticmethod
        def decorated():
            return fail()

        def caller():
            return decorated.__func__()
    """
    m = env.load("m_tb", source)
    assert "__funcsight_enter__" in m.fail.__code__.co_names  # it was rewritten
    with pytest.raises(RuntimeError) as info:
        m.caller()
    frames = [(f.name, f.lineno, f.line) for f in traceback.extract_tb(info.value.__traceback__)][-3:]
    assert frames == [
        ("caller", 10, "return decorated.__func__()"),
        ("decorated", 7, "return fail()"),
        ("fail", 3, 'raise RuntimeError("here")'),
    ]
    assert info.value.__context__ is None
    assert inspect.getsource(m.fail) == textwrap.dedent(source).lstrip("\n").split("\n\n")[0] + "\n"
    assert m.decorated.__func__.__code__.co_firstlineno == 5 == env.registry.functions[env.fid("m_tb.decorated")].line
    for pyc in (env.dir / "__pycache__").glob("*") if (env.dir / "__pycache__").exists() else []:
        assert b"__funcsight" not in pyc.read_bytes(), pyc
    env.rewriter.uninstall()  # control: the same directory does get a cache file when not rewritten
    env.load("m_tb_plain", "def f():\n    return 1\n")
    cached = list((env.dir / "__pycache__").glob("m_tb_plain.*.pyc"))
    assert cached and all(b"__funcsight" not in p.read_bytes() for p in (env.dir / "__pycache__").glob("*"))


def test_syntax_errors_surface_as_python_reports_them(env):
    env.write("m_bad.py", "def f(:\n    pass\n")
    with pytest.raises(SyntaxError) as info:
        importlib.import_module("m_bad")
    assert info.value.filename == str(env.dir / "m_bad.py") and info.value.lineno == 1
    env.write("m_bad2.py", "def f():\n    x = 1\n    global x\n")
    with pytest.raises(SyntaxError, match="global"):
        importlib.import_module("m_bad2")
    assert env.core.internal_errors == 0


def test_packages_and_run_module_as_main(env):
    env.write("shop/__init__.py", """
        def version():
            return "1"
    """)
    env.write("shop/tool.py", """
        import shop

        RESULT = []

        def main():
            return shop.version() + "!"

        if __name__ == "__main__":
            RESULT.append(main())
    """)
    namespace = runpy.run_module("shop.tool", run_name="__main__")
    assert namespace["RESULT"] == ["1!"]
    assert env.calls("shop.tool.main") == 1 and env.calls("shop.version") == 1
    assert sys.modules["shop"].__loader__.__class__.__name__ == "_RewritingLoader"


def test_uninstall_stops_rewriting_new_imports_but_rewritten_code_keeps_counting(env):
    m = env.load("m_before", "def f():\n    return 1\n")
    env.rewriter.uninstall()
    env.rewriter.uninstall()  # idempotent
    late = env.load("m_after", "def g():\n    return 2\n")
    assert (m.f(), late.g()) == (1, 2)
    assert env.calls("m_before.f") == 1
    assert env.registry.lookup("m_after.g") is None and "__funcsight_enter__" not in vars(late)
    env.rewriter.install()
    env.rewriter.install()  # idempotent
    assert sum(finder is env.rewriter._finder for finder in sys.meta_path) == 1


def test_functions_past_the_cap_are_counted_under_overflow(small_env):
    """Past FUNCSIGHT_MAX_FUNCTIONS a function is rewritten with the id of the (overflow) pseudo
    function of its kind: its calls count there, and it runs as written."""
    m = small_env.load("m_cap", """
        def a():
            return 1

        def b():
            return 2

        def c():
            return a() + b()

        def d():
            yield c()
    """)
    assert m.c() == 3 and list(m.d()) == [3]
    assert small_env.calls("m_cap.a") == 2 and small_env.calls("m_cap.b") == 2
    assert small_env.registry.lookup("m_cap.c") is None and small_env.registry.dropped == 2
    assert small_env.calls("(overflow)") == 2 and small_env.calls("(overflow generators)") == 1
    assert small_env.stack() == []


def test_funcsight_itself_and_modules_outside_the_app_are_left_alone(env):
    finder = env.rewriter._finder
    assert finder.find_spec("funcsight.instrumentation.calls", None) is None
    assert finder.find_spec("json", None) is None and finder.find_spec("sys", None) is None


def test_other_finders_are_asked_in_their_order(env):
    """A module only an editable-install finder knows (src layout, after PathFinder) is rewritten;
    one another finder serves with its own loader (pytest's assertion rewriter) is left to it."""
    hidden = env.write("src/layout_mod.py", "def f():\n    return 1\n")
    claimed = env.write("claimed_mod.py", "def g():\n    return 2\n")

    class OwnLoader(importlib.machinery.SourceFileLoader):
        pass

    class Editable:
        @staticmethod
        def find_spec(name, path=None, target=None):
            return importlib.util.spec_from_file_location(name, hidden) if name == "layout_mod" else None

    class Claims:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "claimed_mod":
                return None
            return importlib.util.spec_from_file_location(name, claimed, loader=OwnLoader(name, str(claimed)))

    sys.meta_path.insert(1, Claims)
    sys.meta_path.append(Editable)
    try:
        layout, other = importlib.import_module("layout_mod"), importlib.import_module("claimed_mod")
    finally:
        sys.meta_path.remove(Claims)
        sys.meta_path.remove(Editable)
    assert (layout.f(), other.g()) == (1, 2)
    assert env.calls("layout_mod.f") == 1
    assert type(other.__loader__) is OwnLoader and env.registry.lookup("claimed_mod.g") is None


def test_a_failed_rewrite_runs_the_module_as_written(env, monkeypatch):
    from funcsight.instrumentation import rewrite

    def broken(self, node):
        raise RuntimeError("bug in the rewriter")

    monkeypatch.setattr(rewrite._Transformer, "visit", broken)
    m = env.load("m_fallback", "def f():\n    return 1\n")
    assert m.f() == 1 and "__funcsight_enter__" not in m.f.__code__.co_names
    assert env.core.internal_errors == 1


def test_compile_source_senses_a_script_run_by_a_launcher(env):
    path = env.write("script.py", """
        def main():
            return helper() * 2

        def helper():
            return 21

        RESULT = main()
    """)
    code = env.rewriter.compile_source(path.read_bytes(), str(path), "script")
    namespace = {"__name__": "__main__"}
    exec(code, namespace)
    assert namespace["RESULT"] == 42
    assert env.calls("script.main") == 1 and env.calls("script.helper") == 1
    assert env.rewriter.compile_source(b"def broken(:\n", str(path), "script") is None
