#!/usr/bin/env python3
"""Micro benchmark: nanoseconds per call of small functions, plain and sensed, side by side.

For each workload (a small function, a recursive one, a generator, an async function) it measures
the code as written ("plain"), sensed by the C sensor, sensed by the Python sensor and, for the
small function, wrapped in a real OpenTelemetry SDK span per call (``TracerProvider`` with a
``SimpleSpanProcessor`` and an exporter that drops everything). It prints medians over repeats and
the overhead per sensed call (sensed - plain).

The front end is the one funcsight uses on this Python: ``sys.monitoring`` callbacks on 3.12+,
functions rewritten at import time on 3.11 (:mod:`funcsight.instrumentation.rewrite`; when that
module is missing the 3.11 sensed columns say so). Each variant imports the same source under its
own module name from a scratch directory and its sensor selects only that module; all sensors run
at once, and every round times every variant in turn, so a burst of load from other processes hits
them alike. Times are the thread's CPU time (``time.thread_time_ns``), which does not count the
time the machine gave to other processes.

One more column, "floor", is REFERENCE.md's prototype in this same run: C callbacks that only
count and read ``clock_gettime`` on start, return, yield and resume of the module's functions (on
3.11: the rewritten module with C hooks that do only that, so it is the rewriting scheme's own
cost). "C - floor" is what
the real sensor costs beyond dispatch and a clock read; the prototype measured +57 ns on a quiet
machine, so ``57 * C over / floor over`` estimates the C sensor's overhead on that scale.

    /tmp/venvs/py312/bin/python bench/micro.py             # about a minute
    /tmp/venvs/py312/bin/python bench/micro.py --quick     # fewer, shorter repeats

The machine is shared and noisy: read ratios and overheads, not absolute figures (a pyenv build
without PGO/LTO runs plain Python about 1.5-2x slower than a distro build).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from funcsight.config import Config
from funcsight.instrumentation import csensor
from funcsight.instrumentation._pysensor import PythonSensor
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector

SOURCE = '''
def small(x):
    return x + 1


def drive_small(n):
    for i in range(n):
        small(i)


def drive_small_span(n, tracer):
    for i in range(n):
        with tracer.start_as_current_span("small"):
            small(i)


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def drive_fib(n, depth):
    for _ in range(n):
        fib(depth)


def gen3():
    yield 1
    yield 2
    yield 3


def drive_gen(n):
    for i in range(n):
        for _ in gen3():
            pass


async def leaf(x):
    return x + 1


async def outer(n):
    for i in range(n):
        await leaf(i)


def drive_async(n):
    coro = outer(n)
    try:
        coro.send(None)
    except StopIteration:
        pass
'''

FIB_DEPTH = 15


def _fib_calls(n: int) -> int:
    return 1 if n < 2 else 1 + _fib_calls(n - 1) + _fib_calls(n - 2)


FIB_CALLS = _fib_calls(FIB_DEPTH)

# name -> (run(module, n): makes about n calls of the measured function, calls actually made)
WORKLOADS = {
    "small function": (lambda m, n: m.drive_small(n), lambda n: n),
    "recursive (fib)": (lambda m, n: m.drive_fib(max(1, n // FIB_CALLS), FIB_DEPTH), lambda n: max(1, n // FIB_CALLS) * FIB_CALLS),
    "generator (3 yields)": (lambda m, n: m.drive_gen(n), lambda n: n),
    "async function": (lambda m, n: m.drive_async(n), lambda n: n),
}
COLUMNS = ("plain", "C", "Python", "OTel span", "floor")


class Variant:
    """A way of running the workloads: a module imported under its own name, maybe sensed."""

    def __init__(self, label: str, module: str, calls_share: float):
        self.label = label
        self.module_name = module
        self.calls_share = calls_share  # slow variants make fewer calls per sample
        self.module = None
        self.sensor = None
        self.sink = None
        self.note = ""

    def load(self) -> None:
        self.module = importlib.import_module(self.module_name)

    def sense(self, implementation: str) -> bool:
        if implementation == "c" and not csensor.available():
            self.note = csensor.UNAVAILABLE or "C sensor unavailable"
            return False
        config = Config(include=(self.module_name,))
        registry, selector = FunctionRegistry(), CodeSelector(config)
        make = csensor.CSensor if implementation == "c" else PythonSensor
        core = make(registry, selector)
        self.sink = core.sink
        if hasattr(sys, "monitoring"):
            self.sensor = core
        else:
            try:
                from funcsight.instrumentation.sensor import RewritingSensor

                self.sensor = RewritingSensor(core, selector)
            except ImportError as err:
                self.note = f"3.11 front end unavailable ({err})"
                return False
        self.sensor.start()
        self.load()  # after start: on 3.11 the rewriter must see the import
        return True

    def stop(self) -> None:
        if self.sensor is not None:
            self.sensor.stop()


def install_floor(variant: Variant) -> bool:
    """REFERENCE.md's prototype on this module's functions only: count + clock_gettime per event.
    3.12+: sys.monitoring callbacks; 3.11: the rewriter with C hooks doing only that."""
    if not csensor.available():
        return False
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return install_floor_rewriter(variant)
    tool = next((t for t in (5, 1, 0) if monitoring.get_tool(t) is None), None)
    if tool is None:
        return False
    events = monitoring.events
    monitoring.use_tool_id(tool, "funcsight-bench-floor")
    local = events.PY_START | events.PY_RETURN | events.PY_YIELD | events.PY_RESUME
    for event in (events.PY_START, events.PY_RETURN, events.PY_YIELD, events.PY_RESUME, events.PY_UNWIND):
        monitoring.register_callback(tool, event, csensor._csensor._floor)
    monitoring.set_events(tool, events.PY_UNWIND)
    for value in vars(variant.module).values():
        code = getattr(value, "__code__", None)
        if code is not None:
            monitoring.set_local_events(tool, code, local)
    return True


def install_floor_rewriter(variant: Variant) -> bool:
    try:
        from funcsight.instrumentation import rewrite
        from funcsight.instrumentation.sensor import RewritingSensor
    except ImportError:
        return False
    config = Config(include=(variant.module_name,))
    selector = CodeSelector(config)
    variant.sensor = RewritingSensor(PythonSensor(FunctionRegistry(), selector), selector)
    hooks = rewrite._HOOK_SETS[variant.sensor.rewriter.token]
    f1, f2 = csensor._csensor._floor, csensor._csensor._floor2
    # enter, enter_co, leave, unwind -> token; yield_, resume, await_ -> their value; async for/with
    # wrappers unused here.
    rewrite._HOOK_SETS[variant.sensor.rewriter.token] = (f1, f1, f1, f1, f2, f2, f2, hooks[7], hooks[8])
    variant.sensor.start()
    variant.load()
    return True


def sample(run, calls, module, n: int) -> float:
    gc.collect()
    gc.disable()
    try:
        start = time.thread_time_ns()
        run(module, n)
        elapsed = time.thread_time_ns() - start
    finally:
        gc.enable()
    return elapsed / calls(n)


def otel_tracer():
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    return provider.get_tracer("funcsight.bench.micro")


def front_end() -> str:
    if hasattr(sys, "monitoring"):
        return "sys.monitoring callbacks"
    try:
        import funcsight.instrumentation.rewrite  # noqa: F401

        return "import-time rewriter (enter/leave hooks)"
    except ImportError:
        return "3.11 front end unavailable (instrumentation/rewrite.py missing)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--calls", type=int, default=0, help="calls per sample (default 100000)")
    parser.add_argument("--clock", choices=("tsc", "monotonic"), help="the C sensor's clock (default: its choice)")
    args = parser.parse_args()
    if args.clock and csensor.available():
        csensor._csensor.use_clock(args.clock)
    repeats = args.repeats or (5 if args.quick else 11)
    n = args.calls or (30_000 if args.quick else 100_000)

    print(f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    print(f"front end: {front_end()}")
    if csensor.available():
        print(f"C sensor: built, clock {csensor._csensor.clock()}")
    else:
        print(f"C sensor: NOT available: {csensor.UNAVAILABLE}")
    print(f"{repeats} rounds, each variant timed in turn; thread CPU ns per call, medians\n")

    scratch = tempfile.TemporaryDirectory(prefix="funcsight-micro-")
    for name in ("fsb_plain", "fsb_c", "fsb_py", "fsb_floor"):
        Path(scratch.name, name + ".py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, scratch.name)
    importlib.invalidate_caches()

    plain, floor = Variant("plain", "fsb_plain", 1.0), Variant("floor", "fsb_floor", 1.0)
    c_variant, py_variant = Variant("C", "fsb_c", 1.0), Variant("Python", "fsb_py", 0.1)
    plain.load()
    if hasattr(sys, "monitoring"):
        floor.load()
    variants = [plain]
    notes = []
    for variant, implementation in ((c_variant, "c"), (py_variant, "python")):
        if variant.sense(implementation):
            variants.append(variant)
        else:
            notes.append(f"{variant.label} sensor: {variant.note}")
    if install_floor(floor):
        variants.append(floor)
    tracer = otel_tracer()

    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(repeats + 1):  # round 0 warms up (and lets 3.12 classify)
            for workload, (run, calls) in WORKLOADS.items():
                order = variants[round_ % len(variants):] + variants[: round_ % len(variants)]
                for variant in order:
                    k = max(1000, int(n * variant.calls_share))
                    value = sample(run, calls, variant.module, k)
                    if round_:
                        samples.setdefault((workload, variant.label), []).append(value)
                if workload == "small function" and tracer is not None:
                    k = max(500, n // 50)
                    value = sample(lambda m, k: m.drive_small_span(k, tracer), lambda k: k, plain.module, k)
                    if round_:
                        samples.setdefault((workload, "OTel span"), []).append(value)
    finally:
        for variant in variants:
            variant.stop()

    for variant in (c_variant, py_variant):
        if variant.sensor is not None:
            recorded = sum(stats[0] for stats in variant.sink.background.stats.values())
            notes.append(
                f"{variant.label} sensor ({variant.sensor.implementation}): {recorded} sensed calls recorded, "
                f"internal errors: {variant.sensor.internal_errors}"
            )

    results = {key: statistics.median(values) for key, values in samples.items()}

    def cell(workload: str, column: str) -> str:
        value = results.get((workload, column))
        return f"{value:>10.0f}" if value is not None else f"{'-':>10}"

    def over(workload: str, column: str) -> float | None:
        """Median over rounds of (variant - plain) timed in the same round: a burst of load from
        elsewhere lands on both sides of the difference."""
        values, bases = samples.get((workload, column)), samples.get((workload, "plain"))
        if not values or not bases:
            return None
        return statistics.median(value - base for value, base in zip(values, bases))

    def ocell(value: float | None, width: int = 9) -> str:
        return f"{value:>+{width}.0f}" if value is not None else f"{'-':>{width}}"

    header = f"{'ns per call':<21}" + "".join(f"{c:>10}" for c in COLUMNS) + " |" + "".join(
        f"{c:>9}" for c in ("C over", "Py over", "floor ov", "C-floor")
    )
    print(header)
    print("-" * len(header))
    for workload in WORKLOADS:
        c_over, floor_over = over(workload, "C"), over(workload, "floor")
        diff = None if c_over is None or floor_over is None else c_over - floor_over
        print(
            f"{workload:<21}" + "".join(cell(workload, c) for c in COLUMNS) + " |"
            + ocell(c_over) + ocell(over(workload, "Python")) + ocell(floor_over) + ocell(diff)
        )
    print()
    print("over = sensed - plain, the median of per-round differences: what sensing adds to one call.")
    print("generator: per invocation (start, 3 yields, 3 resumes, return); async: per awaited call;")
    print("recursive: per call of fib. floor: count + clock_gettime per event (REFERENCE.md's prototype).")
    c_over, floor_over = over("small function", "C"), over("small function", "floor")
    if c_over is not None and floor_over and hasattr(sys, "monitoring"):
        print(
            f"small function on REFERENCE.md's scale (prototype floor = 57 ns): C sensor "
            f"~{57 * c_over / floor_over:.0f} ns per sensed call"
        )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
