#!/usr/bin/env python3
"""Micro benchmark: nanoseconds per call of small functions, plain and sensed, side by side.

For each workload (a small function, a recursive one, a generator, an async function) it measures
the code as written ("plain"), sensed by the C sensor, sensed by the Python sensor and, for the
small function, wrapped in a real OpenTelemetry SDK span per call (``TracerProvider`` with a
``SimpleSpanProcessor`` and an exporter that drops everything). It prints medians over repeats and
the overhead per sensed call (sensed - plain). The same rounds time the standard library's
profiler as one more variant: ``cProfile.Profile`` enabled around the same workload (its own copy of
the module; ``enable()`` just before the clock is read, ``disable()`` just after), so "C over" and
"cProfile over" come from the same run and their ratio is printed.

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
    /tmp/venvs/py312/bin/python bench/micro.py --instructions   # callgrind, a few minutes

``--instructions`` counts instructions instead of timing (valgrind's callgrind; the noise-free
comparison): every variant runs alone in its own process under ``valgrind --tool=callgrind
--instr-atstart=no``, warms up, and has instrumentation switched on (``callgrind_control -i on``)
around N and, in a second process, 3N calls of the workload, so start-up and the toggling cancel:
per call = (I(3N) - I(N)) / (calls(3N) - calls(N)). It prints instructions per call of each variant
and over plain. ``--workloads`` picks the workloads (default for this mode: the small function).

The machine is shared and noisy: read ratios and overheads, not absolute figures (a pyenv build
without PGO/LTO runs plain Python about 1.5-2x slower than a distro build).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import inspect
import os
import platform
import re
import shutil
import statistics
import subprocess
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

# Earlier revisions (d3d68cb, the "before" of the restructuring) passed each sensor its Sink; this
# script measures both, so before/after can run side by side.
if "sink" in inspect.signature(PythonSensor.__init__).parameters:
    from funcsight.instrumentation._pysensor import Sink as _OldSink
else:
    _OldSink = None

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
COLUMNS = ("plain", "C", "Python", "cProfile", "OTel span", "floor")
MODULES = {"plain": "fsb_plain", "C": "fsb_c", "Python": "fsb_py", "cProfile": "fsb_cprof", "floor": "fsb_floor",
           "OTel span": "fsb_otel"}


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
        self.enter = self.exit = None  # called just before / after the timed run (cProfile)

    def load(self) -> None:
        self.module = importlib.import_module(self.module_name)

    def sense(self, implementation: str) -> bool:
        if implementation == "c" and not csensor.available():
            self.note = csensor.UNAVAILABLE or "C sensor unavailable"
            return False
        config = Config(include=(self.module_name,))
        registry, selector = FunctionRegistry(), CodeSelector(config)
        make = csensor.CSensor if implementation == "c" else PythonSensor
        if _OldSink is not None:
            self.sink = _OldSink()
            core = make(registry, selector, self.sink)
        else:
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
    core = PythonSensor(FunctionRegistry(), selector, _OldSink()) if _OldSink else PythonSensor(FunctionRegistry(), selector)
    variant.sensor = RewritingSensor(core, selector)
    hooks = rewrite._HOOK_SETS[variant.sensor.rewriter.token]
    f1, f2 = csensor._csensor._floor, csensor._csensor._floor2
    # enter, enter_co, leave, unwind -> token; yield_, resume, await_ -> their value; async for/with
    # wrappers unused here.
    rewrite._HOOK_SETS[variant.sensor.rewriter.token] = (f1, f1, f1, f1, f2, f2, f2, hooks[7], hooks[8])
    variant.sensor.start()
    variant.load()
    return True


def install_cprofile(variant: Variant) -> bool:
    """cProfile on this variant's runs only: enabled just before the clock is read, disabled just
    after (it profiles everything the thread runs meanwhile: the workload and its driver loop)."""
    profiler = cProfile.Profile()
    variant.profiler = profiler
    variant.enter, variant.exit = profiler.enable, profiler.disable
    variant.load()
    return True


def sample(run, calls, variant: Variant, n: int) -> float:
    module, enter, exit_ = variant.module, variant.enter, variant.exit
    gc.collect()
    gc.disable()
    try:
        if enter is not None:
            enter()
        start = time.thread_time_ns()
        run(module, n)
        elapsed = time.thread_time_ns() - start
        if exit_ is not None:
            exit_()
    finally:
        gc.enable()
    return elapsed / calls(n)


def otel_tracer(batch: bool = False):
    """A real SDK tracer whose spans are dropped by the exporter: a ``SimpleSpanProcessor`` (the
    span ends on the caller's thread) or, with ``batch``, a ``BatchSpanProcessor``; None without
    the SDK."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
    except ImportError:
        return None

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    provider = TracerProvider()
    provider.add_span_processor((BatchSpanProcessor if batch else SimpleSpanProcessor)(Drop()))
    return provider.get_tracer("funcsight.bench.micro")


def front_end() -> str:
    if hasattr(sys, "monitoring"):
        return "sys.monitoring callbacks"
    try:
        import funcsight.instrumentation.rewrite  # noqa: F401

        return "import-time rewriter (enter/leave hooks)"
    except ImportError:
        return "3.11 front end unavailable (instrumentation/rewrite.py missing)"


def prepare_modules(labels) -> tempfile.TemporaryDirectory:
    """The workload's source under each variant's module name, in a scratch directory on sys.path."""
    scratch = tempfile.TemporaryDirectory(prefix="funcsight-micro-")
    for label in labels:
        Path(scratch.name, MODULES[label] + ".py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, scratch.name)
    importlib.invalidate_caches()
    return scratch


def make_variant(label: str) -> tuple[Variant | None, str]:
    """The variant `label`, loaded and sensed / profiled as it says; (None, why) when it cannot run."""
    share = {"Python": 0.1, "OTel span": 0.02}.get(label, 1.0)
    variant = Variant(label, MODULES[label], share)
    if label in ("plain", "OTel span"):
        variant.load()
        return variant, ""
    if label in ("C", "Python"):
        if variant.sense("c" if label == "C" else "python"):
            return variant, ""
        return None, f"{label} sensor: {variant.note}"
    if label == "cProfile":
        install_cprofile(variant)
        return variant, ""
    if label == "floor":
        if hasattr(sys, "monitoring"):
            variant.load()
        if install_floor(variant):
            return variant, ""
        return None, "floor: unavailable"
    raise ValueError(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--calls", type=int, default=0,
                        help="calls per sample (default 100000; with --instructions: N, default 20000)")
    parser.add_argument("--clock", choices=("tsc", "monotonic"), help="the C sensor's clock (default: its choice)")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per call under callgrind instead of timing")
    parser.add_argument("--workloads", default="",
                        help="comma-separated workload keys: small,fib,gen,async (default: all; --instructions: small)")
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock and csensor.available():
        csensor._csensor.use_clock(args.clock)
    if args.child:
        return instructions_child(*args.child)
    keys = [k for k in args.workloads.split(",") if k] or (["small"] if args.instructions else list(WORKLOAD_KEYS))
    unknown = [k for k in keys if k not in WORKLOAD_KEYS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOAD_KEYS)}")
    workloads = [WORKLOAD_KEYS[k] for k in keys]
    if args.instructions:
        return instructions_main(workloads, args.calls or 20_000, args.clock)
    repeats = args.repeats or (5 if args.quick else 11)
    n = args.calls or (30_000 if args.quick else 100_000)

    print(f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    print(f"front end: {front_end()}")
    if csensor.available():
        print(f"C sensor: built, clock {csensor._csensor.clock()}")
    else:
        print(f"C sensor: NOT available: {csensor.UNAVAILABLE}")
    print(f"{repeats} rounds, each variant timed in turn; thread CPU ns per call, medians\n")

    scratch = prepare_modules(("plain", "C", "Python", "cProfile", "floor"))
    variants, notes = [], []
    for label in ("plain", "C", "Python", "cProfile", "floor"):
        variant, note = make_variant(label)
        if variant is not None:
            variants.append(variant)
        if note:
            notes.append(note)
    plain = variants[0]
    tracer = otel_tracer()

    samples: dict[tuple[str, str], list[float]] = {}
    try:
        for round_ in range(repeats + 1):  # round 0 warms up (and lets 3.12 classify)
            for workload in workloads:
                run, calls = WORKLOADS[workload]
                order = variants[round_ % len(variants):] + variants[: round_ % len(variants)]
                for variant in order:
                    k = max(1000, int(n * variant.calls_share))
                    value = sample(run, calls, variant, k)
                    if round_:
                        samples.setdefault((workload, variant.label), []).append(value)
                if workload == "small function" and tracer is not None:
                    k = max(500, n // 50)
                    value = sample(lambda m, k: m.drive_small_span(k, tracer), lambda k: k, plain, k)
                    if round_:
                        samples.setdefault((workload, "OTel span"), []).append(value)
    finally:
        for variant in variants:
            variant.stop()
            if variant.exit is not None:
                variant.exit()
    scratch.cleanup()

    for variant in variants:
        if variant.label in ("C", "Python"):
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
        f"{c:>9}" for c in ("C over", "Py over", "cProf ov", "C/cProf", "floor ov", "C-floor")
    )
    print(header)
    print("-" * len(header))
    for workload in workloads:
        c_over, floor_over, cprof_over = over(workload, "C"), over(workload, "floor"), over(workload, "cProfile")
        diff = None if c_over is None or floor_over is None else c_over - floor_over
        ratio = f"{c_over / cprof_over:>9.2f}" if c_over is not None and cprof_over and cprof_over > 0 else f"{'-':>9}"
        print(
            f"{workload:<21}" + "".join(cell(workload, c) for c in COLUMNS) + " |"
            + ocell(c_over) + ocell(over(workload, "Python")) + ocell(cprof_over) + ratio
            + ocell(floor_over) + ocell(diff)
        )
    print()
    print("over = variant - plain, the median of per-round differences: what sensing adds to one call.")
    print("C/cProf = C over / cProfile over (below 1: the C sensor costs less than cProfile in this run).")
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


# ------------------------------------------------------------------------ instruction counts
WORKLOAD_KEYS = {"small": "small function", "fib": "recursive (fib)", "gen": "generator (3 yields)",
                 "async": "async function"}
INSTRUCTION_VARIANTS = ("plain", "C", "Python", "cProfile", "floor", "OTel span")


def _callgrind(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=False)


def instructions_child(label: str, workload_key: str, n: str) -> None:
    """Under callgrind: one variant, one workload; instrumentation on around n calls only."""
    workload = WORKLOAD_KEYS[workload_key]
    scratch = prepare_modules((label,))
    variant, note = make_variant(label)
    if variant is None:
        print(f"UNAVAILABLE {note}")
        return
    run, calls = WORKLOADS[workload]
    if label == "OTel span":
        if workload != "small function" or (tracer := otel_tracer()) is None:
            print("UNAVAILABLE OTel span: small function only, with the SDK installed")
            return
        run, calls = (lambda m, k: m.drive_small_span(k, tracer)), (lambda k: k)
    k = max(100, int(int(n) * variant.calls_share))
    sample(run, calls, variant, max(100, k // 2))  # warm-up: specialisation, the sensor's caches
    gc.collect()
    gc.disable()
    _callgrind("on")
    if variant.enter is not None:
        variant.enter()
    run(variant.module, k)
    if variant.exit is not None:
        variant.exit()
    _callgrind("off")
    gc.enable()
    variant.stop()
    recorded = ""
    if label in ("C", "Python"):
        recorded = f" recorded={sum(stats[0] for stats in variant.sink.background.stats.values())}"
    print(f"CALLS {calls(k)}{recorded}")
    scratch.cleanup()


def instructions_main(workloads, n: int, clock: str | None) -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("micro.py --instructions: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        sys.exit(2)
    print(f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    print(f"front end: {front_end()}")
    print(f"instructions per call (callgrind): (I(3N) - I(N)) / (calls(3N) - calls(N)), N = {n} "
          f"(Python sensor N/10, OTel span N/50), each variant alone in its own process\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_"))}
    env["PYTHONHASHSEED"] = "0"
    results: dict[tuple[str, str], float] = {}
    notes = []
    key_of = {v: k for k, v in WORKLOAD_KEYS.items()}
    for workload in workloads:
        for label in INSTRUCTION_VARIANTS:
            if label == "OTel span" and workload != "small function":
                continue
            counts = []
            for size in (n, 3 * n):
                command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
                           sys.executable, os.path.abspath(__file__), "--child", label, key_of[workload], str(size)]
                if clock:
                    command[6:6] = ["--clock", clock]
                result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
                collected = re.search(r"Collected : (\d+)", result.stderr)
                made = re.search(r"CALLS (\d+)", result.stdout)
                if "UNAVAILABLE" in result.stdout:
                    notes.append(result.stdout.strip())
                    break
                if result.returncode != 0 or collected is None or made is None:
                    raise SystemExit(f"micro.py: {label} / {workload} failed (exit {result.returncode}):\n"
                                     f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
                counts.append((int(collected.group(1)), int(made.group(1))))
                if label in ("C", "Python"):
                    recorded = re.search(r"recorded=(\d+)", result.stdout)
                    if recorded is None or int(recorded.group(1)) < int(made.group(1)):
                        notes.append(f"WRONG: {label} / {workload}: sensed calls recorded "
                                     f"{recorded.group(1) if recorded else '?'} < {made.group(1)}")
            if len(counts) == 2:
                (i1, c1), (i3, c3) = counts
                results[(workload, label)] = (i3 - i1) / (c3 - c1)
                print(f"  {workload:<21} {label:<10} {results[(workload, label)]:>12,.1f} instr/call", flush=True)
    print()
    header = f"{'instr per call':<21}" + "".join(f"{c:>11}" for c in INSTRUCTION_VARIANTS) + " |" + "".join(
        f"{c:>10}" for c in ("C over", "Py over", "cProf ov", "C/cProf", "floor ov", "C-floor"))
    print(header)
    print("-" * len(header))
    for workload in workloads:
        base = results.get((workload, "plain"))

        def over(label: str) -> float | None:
            value = results.get((workload, label))
            return None if value is None or base is None else value - base

        def ocell(value: float | None) -> str:
            return f"{value:>+10,.0f}" if value is not None else f"{'-':>10}"

        c_over, cprof_over, floor_over = over("C"), over("cProfile"), over("floor")
        ratio = f"{c_over / cprof_over:>10.2f}" if c_over is not None and cprof_over else f"{'-':>10}"
        diff = None if c_over is None or floor_over is None else c_over - floor_over
        print(f"{workload:<21}" + "".join(
            f"{results[(workload, c)]:>11,.0f}" if (workload, c) in results else f"{'-':>11}" for c in INSTRUCTION_VARIANTS)
            + " |" + ocell(c_over) + ocell(over("Python")) + ocell(cprof_over) + ratio + ocell(floor_over) + ocell(diff))
    print("\nover = variant - plain (instructions each sensed call adds); C/cProf below 1: the C sensor executes")
    print("fewer instructions per call than cProfile.")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
