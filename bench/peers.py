#!/usr/bin/env python3
"""Peers side by side: ns and instructions per sensed call of funcsight and the tools it is compared with.

The f -> g workload of REFERENCE.md: ``mid(x)`` calls ``leaf`` twice, so every ``mid`` call is three
sensed calls. Each column is one way of watching those calls:

* ``plain``            - no tool (the baseline every other column is measured against);
* ``funcsight C``      - funcsight's C sensor on the module (``sys.monitoring``; the rewriter on 3.11);
* ``funcsight Python`` - funcsight's pure-Python sensor;
* ``cProfile``         - the standard library's profiler, enabled around the timed run;
* ``yappi``            - yappi with the wall clock, builtins off, started around the timed run;
* ``logfire 10ms``     - Logfire's ``install_auto_tracing(min_duration=0.01)``: times every call,
  makes spans only for slow ones (its cheapest every-call mode);
* ``logfire 0``        - the same with ``min_duration=0``: a span per call;
* ``OTel span``        - an OpenTelemetry SDK span per call (``TracerProvider`` with a
  ``BatchSpanProcessor`` and an exporter that drops everything), ``mid`` and ``leaf`` wrapped.

Every column runs in its own process (the tools change process-wide state: Logfire's import hook
and providers, yappi's and cProfile's hooks), which also times a plain copy of the same module in
alternating rounds, so each sample is (column - plain) from one process, in CPU time of the thread;
the parent repeats that for every column in turn, ``--repeats`` times, and prints medians.
``--pythons`` runs the whole table on several interpreters (each needs funcsight, yappi and logfire
installed: ``pip install -e '.[bench]'``); a column that cannot run on one says why in its cell.

``--instructions``: instructions per sensed call instead (valgrind's callgrind, as ``micro.py
--instructions``): every column alone in its own process under callgrind, instrumentation switched
on around N and, in a second process, 3N ``mid`` calls, so start-up cancels; minus plain's.

    /tmp/venv/bin/python bench/peers.py                          # this interpreter, ~2 minutes
    /tmp/venv/bin/python bench/peers.py --pythons /tmp/v311/bin/python,/tmp/v312/bin/python,/tmp/v313/bin/python
    /tmp/venv/bin/python bench/peers.py --instructions           # callgrind, ~5 minutes

The machine is shared: read the ratios between columns of one run, not absolute figures.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import micro  # bench/ is this script's directory: Variant, sample, prepare_modules, _callgrind

SOURCE = '''
def leaf(x):
    return x + 1


def mid(x):
    return leaf(x) + leaf(x + 1)


def drive(n):
    for i in range(n):
        mid(i)
'''
SENSED_PER_MID = 3
COLUMNS = ("plain", "funcsight C", "funcsight Python", "cProfile", "yappi", "logfire 10ms", "logfire 0", "OTel span")
KEYS = {"plain": "plain", "c": "funcsight C", "python": "funcsight Python", "cprofile": "cProfile", "yappi": "yappi",
        "logfire": "logfire 10ms", "logfire0": "logfire 0", "otel": "OTel span"}
# Slow columns make fewer calls per sample, so a sample takes about as long as plain's.
SHARE = {"funcsight Python": 0.1, "yappi": 0.2, "logfire 10ms": 0.2, "logfire 0": 0.005, "OTel span": 0.01}


# ------------------------------------------------------------------------------------- columns
class Unavailable(Exception):
    pass


def _install_sources(names: list[str]) -> None:
    """The workload under each module name, in a scratch directory on sys.path (micro.py's scheme)."""
    for name in names:
        micro.MODULES[name] = name
    micro.SOURCE = SOURCE
    return micro.prepare_modules(names)


def make_column(label: str) -> micro.Variant:
    """The column's module, loaded and watched by its tool; Unavailable(why) when it cannot run."""
    module = "peer_" + re.sub(r"\W", "_", label.lower())
    variant = micro.Variant(label, module, SHARE.get(label, 1.0))
    if label == "plain":
        variant.load()
    elif label in ("funcsight C", "funcsight Python"):
        if not variant.sense("c" if label == "funcsight C" else "python"):
            raise Unavailable(variant.note)
    elif label == "cProfile":
        micro.install_cprofile(variant)
    elif label == "yappi":
        try:
            import yappi
        except ImportError as err:
            raise Unavailable(f"yappi is not installed ({err})") from None
        yappi.set_clock_type("wall")
        variant.enter = lambda: yappi.start(builtins=False)
        variant.exit = yappi.stop
        variant.load()
    elif label.startswith("logfire"):
        try:
            import logfire
        except ImportError as err:
            raise Unavailable(f"logfire is not installed ({err})") from None
        try:
            logfire.configure(send_to_logfire=False, console=False)
            logfire.install_auto_tracing([module], min_duration=0.01 if label == "logfire 10ms" else 0)
        except Exception as err:  # a Logfire that does not run on this Python says so in its cell
            raise Unavailable(f"logfire: {type(err).__name__}: {err}") from None
        variant.load()  # after install: the import hook rewrites the module
    elif label == "OTel span":
        tracer = otel_batch_tracer()
        variant.load()
        for name in ("leaf", "mid"):  # mid finds the wrapped leaf, drive the wrapped mid: globals
            setattr(variant.module, name, traced(tracer, name, getattr(variant.module, name)))
    else:
        raise ValueError(label)
    return variant


def otel_batch_tracer():
    tracer = micro.otel_tracer(batch=True)
    if tracer is None:
        raise Unavailable("the OpenTelemetry SDK is not installed")
    return tracer


def traced(tracer, name: str, function):
    def wrapper(x):
        with tracer.start_as_current_span(name):
            return function(x)

    return wrapper


def run(module, n: int) -> None:
    module.drive(n)


def mids(n: int) -> int:
    return n


# --------------------------------------------------------------------------------------- child
def child_time(label: str, n: int, rounds: int) -> dict:
    scratch = _install_sources(["peer_plain", "peer_" + re.sub(r"\W", "_", label.lower())])
    try:
        plain = make_column("plain")
        column = make_column(label) if label != "plain" else plain
    except Unavailable as why:
        return {"unavailable": str(why)}
    k = max(200, int(n * column.calls_share))
    diffs = []
    for round_ in range(rounds + 1):  # round 0 warms up (3.12 specialises, Logfire learns what is slow)
        base = micro.sample(run, mids, plain, k)
        value = micro.sample(run, mids, column, k)
        if round_:
            diffs.append((value - base) / SENSED_PER_MID)
    column.stop()
    scratch.cleanup()
    return {"ns": statistics.median(diffs), "plain_ns": base / SENSED_PER_MID,
            "wrong": proof_of_work(column, (rounds + 1) * k * SENSED_PER_MID)}


def proof_of_work(column: micro.Variant, sensed_calls: int) -> str:
    """Empty when the column's tool really watched the calls, else what is wrong."""
    if column.label.startswith("funcsight"):
        recorded = sum(stats[0] for stats in column.sink.background.stats.values())
        return "" if recorded >= sensed_calls else f"recorded {recorded} of {sensed_calls} sensed calls"
    if column.label.startswith("logfire"):  # its import hook rewrites each function to call a helper global
        names = column.module.mid.__code__.co_names
        return "" if any(n.startswith("logfire") for n in names) else "the module was not rewritten by Logfire"
    if column.label == "yappi":
        import yappi

        stats = yappi.get_func_stats()
        calls = sum(s.ncall for s in stats if s.name in ("leaf", "mid"))
        return "" if calls >= sensed_calls else f"yappi counted {calls} of {sensed_calls} calls"
    return ""


def child_instructions(label: str, n: int) -> dict:
    scratch = _install_sources(["peer_" + re.sub(r"\W", "_", label.lower())])
    try:
        column = make_column(label)
    except Unavailable as why:
        return {"unavailable": str(why)}
    k = max(10, int(n * column.calls_share))  # N and 3N must differ for the slowest columns too
    micro.sample(run, mids, column, max(10, k // 2))  # warm-up
    gc.collect()
    gc.disable()
    micro._callgrind("on")
    if column.enter is not None:
        column.enter()
    column.module.drive(k)
    if column.exit is not None:
        column.exit()
    micro._callgrind("off")
    gc.enable()
    column.stop()
    scratch.cleanup()
    return {"calls": k * SENSED_PER_MID}


# -------------------------------------------------------------------------------------- parent
def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_", "LOGFIRE_"))}
    env.update(PYTHONHASHSEED="0", LOGFIRE_SEND_TO_LOGFIRE="false", LOGFIRE_CONSOLE="false",
               PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    return env


def call_child(command: list[str], timeout: float) -> tuple[dict, str]:
    try:
        result = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"unavailable": f"timed out after {timeout:.0f} s"}, ""
    line = next((l for l in reversed(result.stdout.splitlines()) if l.startswith("{")), None)
    if result.returncode != 0 or line is None:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"unavailable": f"failed (exit {result.returncode}): {last[:120]}"}, result.stderr
    return json.loads(line), result.stderr


def python_version(python: str) -> str:
    result = subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True)
    return result.stdout.strip() or f"? ({python})"


def time_table(pythons: list[str], columns: list[str], repeats: int, n: int, rounds: int) -> dict:
    results: dict[tuple[str, str], list] = {}
    notes: dict[tuple[str, str], str] = {}
    for python in pythons:
        for repeat in range(repeats):
            for label in columns[repeat % len(columns):] + columns[: repeat % len(columns)]:
                if (python, label) in notes:
                    continue
                out, _ = call_child([python, os.path.abspath(__file__), "--child", label, str(n), str(rounds)], 600)
                if "unavailable" in out:
                    notes[(python, label)] = out["unavailable"]
                elif out.get("wrong"):
                    notes[(python, label)] = "WRONG: " + out["wrong"]
                else:
                    results.setdefault((python, label), []).append(out)
            print(f"  {python_version(python)}: repeat {repeat + 1}/{repeats} done", flush=True)
    return {"results": results, "notes": notes}


def instruction_table(pythons: list[str], columns: list[str], n: int) -> dict:
    results, notes = {}, {}
    for python in pythons:
        for label in columns:
            counts = []
            for size in (n, 3 * n):
                command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
                           python, os.path.abspath(__file__), "--child-instructions", label, str(size)]
                out, stderr = call_child(command, 1800)
                collected = re.search(r"Collected : (\d+)", stderr)
                if "unavailable" in out or collected is None:
                    notes[(python, label)] = out.get("unavailable", "no callgrind total")
                    break
                counts.append((int(collected.group(1)), out["calls"]))
            if len(counts) == 2 and counts[1][1] == counts[0][1]:
                notes[(python, label)] = f"N and 3N made the same number of calls ({counts[0][1]}): raise --calls"
            elif len(counts) == 2:
                (i1, c1), (i3, c3) = counts
                results[(python, label)] = (i3 - i1) / (c3 - c1)
            print(f"  {python_version(python)} {label}: "
                  + (f"{results[(python, label)]:,.0f} instr/call" if (python, label) in results
                     else notes.get((python, label), "?")), flush=True)
    return {"results": results, "notes": notes}


def print_table(title: str, pythons: list[str], columns: list[str], cell) -> None:
    versions = {p: python_version(p) for p in pythons}
    print(f"\n{title}")
    width = max(len(c) for c in columns) + 2
    print(f"  {'column':<{width}}" + "".join(f"{versions[p]:>14}" for p in pythons))
    for label in columns:
        print(f"  {label:<{width}}" + "".join(f"{cell(p, label):>14}" for p in pythons))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child_time(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--child-instructions":
        print(json.dumps(child_instructions(sys.argv[2], int(sys.argv[3]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythons", default=sys.executable, help="comma-separated interpreters (default: this one)")
    parser.add_argument("--columns", default=",".join(KEYS), help=f"comma-separated, of: {', '.join(KEYS)}")
    parser.add_argument("--repeats", type=int, default=7, help="processes per column and Python (default 7)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating column/plain samples per process")
    parser.add_argument("--calls", type=int, default=0, help="mid() calls per sample (default 30000; "
                                                             "--instructions: N, default 5000)")
    parser.add_argument("--instructions", action="store_true", help="instructions per sensed call (callgrind)")
    args = parser.parse_args()
    pythons = [p for p in args.pythons.split(",") if p]
    unknown = [k for k in args.columns.split(",") if k and k not in KEYS]
    if unknown:
        parser.error(f"unknown columns {unknown}; choose from {', '.join(KEYS)}")
    columns = [KEYS[k] for k in args.columns.split(",") if k]
    missing = [p for p in pythons if shutil.which(p) is None and not os.path.exists(p)]
    if missing:
        parser.error(f"no such interpreter: {', '.join(missing)}")
    started = time.monotonic()
    print(f"peers: f -> g workload (mid calls leaf twice: {SENSED_PER_MID} sensed calls per mid), "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("peers.py --instructions: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
            return 2
        n = args.calls or 5000
        table = instruction_table(pythons, columns, n)
        res, notes = table["results"], table["notes"]

        def cell(python: str, label: str) -> str:
            if (python, label) not in res:
                return "n/a*"
            if label == "plain":
                return f"{res[(python, label)]:,.0f}"
            base = res.get((python, "plain"))
            return f"+{res[(python, label)] - base:,.0f}" if base is not None else f"{res[(python, label)]:,.0f}"

        print_table(f"instructions per sensed call over plain (callgrind; (I(3N) - I(N)) / 2N calls, N = {n} mid "
                    f"calls; plain: instructions per call)", pythons, columns, cell)
    else:
        n = args.calls or 30_000
        table = time_table(pythons, columns, args.repeats, n, args.rounds)
        res, notes = table["results"], table["notes"]

        def cell(python: str, label: str) -> str:
            values = res.get((python, label))
            if not values:
                return "n/a*"
            if label == "plain":
                return f"{statistics.median(v['plain_ns'] for v in values):,.0f}"
            return f"+{statistics.median(v['ns'] for v in values):,.0f}"

        print_table(f"ns per sensed call over plain (thread CPU time; median of {args.repeats} processes, each the "
                    f"median of {args.rounds} alternating rounds; plain: ns per call)", pythons, columns, cell)
    versions = {p: python_version(p) for p in pythons}
    for (python, label), why in notes.items():
        print(f"  * {label} on {versions[python]}: {why}")
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
