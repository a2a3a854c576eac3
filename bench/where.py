#!/usr/bin/env python3
"""Where funcsight's extra instructions per request go: a ranked table of its components.

``instructions.py`` says how many instructions funcsight adds to a request; this script says what
they are spent on. It profiles two columns of ``instructions.py`` (``off`` and one funcsight column,
by default ``fw``: the C sensor with the framework's modules sensed too) under valgrind's callgrind,
each in its own process, with collection switched on around the same ``--requests`` requests
after the same warm-up, keeps both profiles and reads them with :mod:`callgrind_costs` (one figure
per function and per caller -> callee edge, inlined parts and recursion merged). Each component is
the inclusive cost of the calls into it from outside, divided by the requests:

* the sensor's ``sys.monitoring`` callbacks (``core_on_start`` ...), each with what it calls beyond
  the sensor's own code (the context-variable read, the stack sampler for errors, span tuples...);
* CPython's event dispatch around them (``instrumentation.c``: the callback's vectorcall, the
  offset argument's int object, the result check), i.e. what a callback costs before it runs;
* the rollup span processor (``_crollup``: request start and end, the fold of the request's call
  table into the window, the table's deallocation);
* the function watcher (``on_function_event``: classification of new code objects);
* the rest, by difference: the eval loop's instrumented opcodes, allocator and deallocation
  traffic, the garbage collector; its largest self-cost differences are listed below the table.

Sensed invocations per request are counted from the profile (PY_START callbacks): with Flask's
in-process test client and the framework sensed, the client's own werkzeug calls (building the
request, reading the response; outside the request, so in the background table) are sensed too.

    /tmp/venv/bin/python bench/where.py                        # httpbin, app + framework, 3.12
    /tmp/venv/bin/python bench/where.py --app flask --column c --keep /tmp/prof

About 2 minutes per column (valgrind). Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import callgrind_costs
import instructions

CALLBACKS = ("core_on_start", "core_on_return", "core_on_unwind", "core_on_yield", "core_on_resume", "core_on_throw")
ROLLUP_ENTRIES = {"rollup_on_start", "rollup_on_end", "rollup_on_ending"}


def breakdown(on: callgrind_costs.Profile, off: callgrind_costs.Profile, requests: int) -> tuple[list, dict]:
    """(rows, facts): rows are (component, instructions per request, calls per request, indent)."""
    per = lambda value: value / requests  # noqa: E731
    rows = []
    sensor = on.functions_in_object("_csensor")
    rollup = on.functions_in_object("_crollup")
    total = on.total - off.total

    callbacks_cost = 0
    callback_rows = []
    for name in CALLBACKS:
        cost, calls = on.inclusive_into({name}, sensor)
        callbacks_cost += cost
        if cost:
            callback_rows.append((f"{name}", per(cost), per(calls), 1))
    rows.append(("sensor callbacks (C, inclusive)", per(callbacks_cost), None, 0))
    rows.extend(sorted(callback_rows, key=lambda r: -r[1]))
    # The sensor's functions reached from the callbacks (the table methods the rollup calls are its rows).
    entered_elsewhere = {b for (a, b) in on.edges if b in sensor and a not in sensor} - set(CALLBACKS)
    callback_side = sensor - entered_elsewhere
    calls_out, called = [], 0
    for callee, (cost, calls) in on.callees_of(callback_side).items():
        called += cost
        if per(cost) >= 200:
            callers = sorted({a for (a, b) in on.edges if b == callee and a in callback_side})
            calls_out.append((f"{'/'.join(callers)} -> {callee}", per(cost), per(calls), 2))
    rows.append(("of which: the sensor's own C code (callbacks minus the calls below)", per(callbacks_cost - called),
                 None, 1))
    own = [(f"{fn} (self)", per(on.self_cost[fn]), None, 2) for fn in callback_side if per(on.self_cost.get(fn, 0)) >= 1000]
    rows.extend(sorted(own, key=lambda r: -r[1]))
    rows.extend(sorted(calls_out, key=lambda r: -r[1]))

    instrumentation = on.functions_in_file("instrumentation.c")
    dispatch_all, events = on.inclusive_into(instrumentation)
    dispatch_off, _ = off.inclusive_into(instrumentation)
    entered_callbacks = sum(on.inclusive_into({name}, sensor)[0] for name in CALLBACKS)
    dispatch = dispatch_all - entered_callbacks - dispatch_off
    rows.append(("CPython sys.monitoring dispatch around the callbacks", per(dispatch), per(events), 0))

    rollup_cost, rollup_calls = on.inclusive_into(ROLLUP_ENTRIES & rollup, rollup)
    rows.append(("rollup span processor (C, inclusive: request table, fold into window)", per(rollup_cost),
                 per(rollup_calls), 0))
    for callee, (cost, calls) in sorted(on.callees_of(rollup).items(), key=lambda kv: -kv[1][0]):
        if per(cost) >= 1000:
            rows.append((f"rollup -> {callee}", per(cost), per(calls), 1))

    watcher, created = on.inclusive_into({"on_function_event"})
    rows.append(("function watcher (new function objects: classify on first sight)", per(watcher), per(created), 0))

    gc_on, _ = on.inclusive_into({"gc_collect_main"})
    gc_off, _ = off.inclusive_into({"gc_collect_main"})
    rows.append(("garbage collector (gc_collect_main, on - off; may overlap the rows above)", per(gc_on - gc_off), None, 0))

    attributed = callbacks_cost + dispatch + rollup_cost + watcher
    rows.append(("rest, by difference (eval loop's instrumented opcodes, allocation, GC ...)",
                 per(total - attributed), None, 0))
    facts = {
        "total": per(total), "on": per(on.total), "off": per(off.total),
        "starts": per(on.inclusive_into({"core_on_start"}, sensor)[1]),
        "exits": per(sum(on.inclusive_into({n}, sensor)[1] for n in ("core_on_return", "core_on_unwind"))),
    }
    deltas = {fn: on.self_cost.get(fn, 0) - off.self_cost.get(fn, 0) for fn in set(on.self_cost) | set(off.self_cost)}
    excluded = sensor | rollup | instrumentation | {"cfunction_vectorcall_FASTCALL"}
    facts["rest_top"] = [(fn, per(v)) for fn, v in sorted(deltas.items(), key=lambda kv: -abs(kv[1]))
                         if fn not in excluded][:12]
    return rows, facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="httpbin", choices=sorted(instructions.APPS))
    parser.add_argument("--column", default="fw", help="an instructions.py column key (default fw: C sensor + framework)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--keep", metavar="DIR", help="keep the two callgrind files (and the app copies) in DIR")
    parser.add_argument("--reuse", action="store_true", help="with --keep: read DIR's profiles instead of running")
    args = parser.parse_args()
    columns = {key: env for key, _, env in instructions.COLUMNS}
    if args.column not in columns or args.column == "off":
        parser.error(f"--column: one of {', '.join(k for k in columns if k != 'off')}")
    if shutil.which("valgrind") is None:
        print("where.py: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    base = args.keep or tempfile.mkdtemp(prefix="funcsight-where-")
    os.makedirs(base, exist_ok=True)
    files = {}
    for key in ("off", args.column):
        files[key] = os.path.join(base, f"{args.app}-{key}.callgrind")
        if args.reuse and os.path.exists(files[key]):
            continue
        workdir = instructions.scratch_copy(base, args.app, key)
        _, sensed = instructions.measure(sys.executable, workdir, args.app, columns[key], args.warmup,
                                         args.requests, out_file=files[key])
        proof = f" (sensor {sensed[0]}, {sensed[1]:.2f} sensed calls per request in the request)" if sensed else ""
        print(f"profiled {args.app} {key}{proof}", flush=True)
    on = callgrind_costs.read(files[args.column])
    off = callgrind_costs.read(files["off"])
    rows, facts = breakdown(on, off, args.requests)
    print(f"\nPython {sys.version.split()[0]}, {args.app}, column {args.column} vs off, {args.requests} requests "
          f"after {args.warmup} warm-up; instructions per request (callgrind)")
    print(f"  off {facts['off']:,.0f}   on {facts['on']:,.0f}   on/off {facts['on'] / facts['off']:.3f}   "
          f"extra {facts['total']:,.0f}")
    print(f"  sensed invocations per request (PY_START): {facts['starts']:.1f}; exits (PY_RETURN + PY_UNWIND): "
          f"{facts['exits']:.1f}; extra per sensed invocation {facts['total'] / max(facts['starts'], 1):,.0f}\n")
    print(f"  {'component':<92} {'instr/req':>10} {'share':>6} {'calls/req':>9}")
    for label, cost, calls, indent in rows:
        share = f"{100 * cost / facts['total']:.1f}%" if facts["total"] else "-"
        calls_text = f"{calls:.1f}" if calls is not None else ""
        print(f"  {'  ' * indent + label:<92} {cost:>10,.0f} {share:>6} {calls_text:>9}")
    print("\n  largest self-cost differences outside the sensor's and the rollup's own code (on - off, per request;")
    print("  informational: a function's self cost may be inside a row above, e.g. the dispatch's or the sampler's):")
    for fn, value in facts["rest_top"]:
        print(f"    {fn:<60} {value:>+10,.0f}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"\nprofiles kept in {base} (callgrind_annotate --inclusive=yes FILE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
