"""Memory benchmark: RSS with 5,000 sensed functions x 50 routes, side by side with the caps.

Generates a module of N functions in a scratch directory, senses it in-process with the real
instrumentor (C sensor when built, else Python), and runs R "requests" (real SDK SERVER spans, each
with its own ``http.route``) that each call every function once, so one window holds N x R
function x route series. Prints RSS before sensing, after the first window filled, and after it was
exported, for three settings: the series cap raised to hold everything, and the default caps.

Then the bytes per open path node (``--paths``; ``--no-paths`` skips it). A module of P "parent"
functions that each call the same L "leaf" functions gives P + P x L call-tree nodes with only P + L
functions; R routes each run that whole tree once, so the open window holds R x (P + P x L) path
nodes (``FUNCSIGHT_MAX_PATHS`` raised so none is folded). A control run ("flat": the request calls
the P parents and the L leaves itself) has the same functions, routes and function x route series
but only P + L nodes per route, so

    bytes per open path node = (growth with the tree - growth flat) / (R x (P + P x L - (P + L)))

for the window (the per-route tables), plus the process-wide path registry, which grows once per
node whatever the number of routes (measured on its own: a ``PathRegistry`` given the same edges).
Both are measured as allocated bytes (``tracemalloc``, which sees every ``PyMem_*``/object
allocation of the C sensor and the Python twin, without RSS's page granularity or malloc slack) and
as RSS (runs without tracemalloc, ``malloc_trim(0)`` before each reading so memory freed earlier
is not silently reused; still coarse). Both children first wait for the process's early first window (it
goes out about a second after the first request) so no export runs while they measure.

    python bench/memory.py [--functions 5000] [--routes 50] [--parents 100 --leaves 100 --path-routes 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

CHILD = r'''
import os, sys, time, importlib
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

def rss_mib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

app_dir, functions, routes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, app_dir)
trace.set_tracer_provider(TracerProvider())
base = rss_mib()
from funcsight.agent import FuncsightInstrumentor
FuncsightInstrumentor().instrument(app_dir=app_dir, db_path=os.path.join(app_dir, "fs.db"), export_interval_s=3600)
running = FuncsightInstrumentor.running
import many
calls = [getattr(many, f"f{i}") for i in range(functions)]
tracer = trace.get_tracer("bench")

def settle(running, tracer):
    """A process's first window goes out about a second after its first request (the export
    pipeline's first_window_s): send one empty request and wait for that window to go, so no export
    happens while memory is measured (the next one is export_interval_s = 3600 s away)."""
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/settle"}):
        pass
    for _ in range(100):
        if running.windows.open_counts()["requests"] == 0:
            return
        time.sleep(0.1)
    raise SystemExit("the first window did not go out within 10 s")

settle(running, tracer)
started = rss_mib()
for r in range(routes):
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": f"/r{r}"}):
        for call in calls:
            call()
filled = rss_mib()
window_series = running.windows.open_series
running.pipeline.flush()
exported = rss_mib()
w = running.windows
print(f"{running.sensor.implementation:8} max_series={w.max_series:>7} max_routes={w.max_routes:>4}  "
      f"series in window {window_series:>7}  functions {len(running.registry):>5}  "
      f"RSS MiB: python+otel {base:6.1f}  sensing on {started:6.1f}  window full {filled:6.1f} "
      f"(+{filled - started:5.1f})  after export {exported:6.1f}")
'''


PATHS_CHILD = r'''
import gc, os, sys, time, tracemalloc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

def rss():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

app_dir, module, parents, leaves, routes, mode = sys.argv[1:7]
parents, leaves, routes = int(parents), int(leaves), int(routes)
sys.path.insert(0, app_dir)
trace.set_tracer_provider(TracerProvider())
from funcsight.agent import FuncsightInstrumentor
FuncsightInstrumentor().instrument(app_dir=app_dir, db_path=os.path.join(app_dir, "fs.db"), export_interval_s=3600)
running = FuncsightInstrumentor.running
request = __import__(module).request
tracer = trace.get_tracer("bench")

def settle(running, tracer):
    """A process's first window goes out about a second after its first request (the export
    pipeline's first_window_s): send one empty request and wait for that window to go, so no export
    happens while memory is measured (the next one is export_interval_s = 3600 s away)."""
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/settle"}):
        pass
    for _ in range(100):
        if running.windows.open_counts()["requests"] == 0:
            return
        time.sleep(0.1)
    raise SystemExit("the first window did not go out within 10 s")

def serve(route):
    with tracer.start_as_current_span("GET", kind=SpanKind.SERVER, attributes={"http.route": route}):
        request()

try:  # hand freed heap memory back first, so RSS growth is new memory, not pages reused from
    # earlier frees (compiling the generated module leaves megabytes of them)
    trim = __import__("ctypes").CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    trim = lambda pad: 0

def now():
    gc.collect()
    if mode == "traced":
        return tracemalloc.get_traced_memory()[0]
    trim(0)
    return rss()

settle(running, tracer)
if mode == "traced":
    tracemalloc.start()
serve("/warm")            # every function registered, every registry node made, one route's window table
serve("/warm")
nodes = len(running.sensor.paths)
before = now()
for r in range(routes):
    serve(f"/r{r}")
    serve(f"/r{r}")       # a second request adds calls, not nodes
filled = now()
w = running.windows
window = w.drain()        # the open window closed: what it held, then freed
held = sum(1 for (route, path) in window.paths if route.startswith("/r"))
folded = window.counters.overflow_paths
del window
exported = now()
print(f"RESULT {running.sensor.implementation} {module} {mode} nodes={nodes} held={held} "
      f"overflow={folded} grow={filled - before} after_export={exported - before}")
'''

REGISTRY_CHILD = r'''
import sys, tracemalloc
parents, leaves, implementation = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if implementation == "c":
    from funcsight.instrumentation._csensor import PathRegistry
else:
    from funcsight.instrumentation.paths import PathRegistry
registry = PathRegistry(max_nodes=10 ** 7)
if hasattr(registry, "ensure"):
    registry.ensure(parents + leaves)     # last[] by function id: per function, not per node
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
for p in range(parents):
    node = registry.child(0, p)
    for leaf in range(leaves):
        registry.child(node, parents + leaf)
grown = tracemalloc.get_traced_memory()[0] - before
print(f"RESULT nodes={len(registry) - 1} bytes={grown}")
'''


def write_path_modules(app_dir: str, parents: int, leaves: int) -> None:
    """pathtree: request -> p_i -> every l_j (P + P x L nodes); pathflat: request -> every p_i and
    every l_j (P + L nodes). Same functions, same series."""
    with open(os.path.join(app_dir, "pathtree.py"), "w") as tree, open(os.path.join(app_dir, "pathflat.py"), "w") as flat:
        for j in range(leaves):
            for handle in (tree, flat):
                handle.write(f"def l{j}():\n    return {j}\n\n")
        for i in range(parents):
            tree.write(f"def p{i}():\n" + "".join(f"    l{j}()\n" for j in range(leaves)) + "\n")
            flat.write(f"def p{i}():\n    return {i}\n\n")
        tree.write("def request():\n" + "".join(f"    p{i}()\n" for i in range(parents)))
        flat.write("def request():\n" + "".join(f"    p{i}()\n" for i in range(parents))
                   + "".join(f"    l{j}()\n" for j in range(leaves)))


def measure_paths(args) -> None:
    p, l, r = args.parents, args.leaves, args.path_routes
    tree_nodes, flat_nodes = p + p * l, p + l
    print(f"\nBytes per open path node: {p} parents x {l} leaves ({tree_nodes} nodes per route with the tree, "
          f"{flat_nodes} flat), {r} routes, 2 requests each; FUNCSIGHT_MAX_PATHS={tree_nodes + 10}")
    with tempfile.TemporaryDirectory(prefix="funcsight-mem-paths-") as app_dir:
        write_path_modules(app_dir, p, l)
        for implementation in ("c", "python"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCSIGHT_")}
            env.update(FUNCSIGHT_IMPLEMENTATION=implementation, FUNCSIGHT_INCLUDE="pathtree,pathflat",
                       FUNCSIGHT_MAX_PATHS=str(tree_nodes + 10), FUNCSIGHT_MAX_SERIES=str((p + l) * (r + 2) + 100),
                       FUNCSIGHT_MAX_ROUTES="1000")
            got = {}
            for mode in ("traced", "rss"):
                for module in ("pathtree", "pathflat"):
                    result = subprocess.run([sys.executable, "-c", PATHS_CHILD, app_dir, module, str(p), str(l), str(r), mode],
                                            env=env, capture_output=True, text=True, timeout=900)
                    found = re.search(r"RESULT (\S+) \S+ \S+ nodes=(\d+) held=(-?\d+) overflow=(\d+) grow=(-?\d+) "
                                      r"after_export=(-?\d+)", result.stdout)
                    if found is None:
                        print(f"  {implementation} {module} {mode}: failed\n{result.stdout[-500:]}{result.stderr[-1500:]}")
                        break
                    got[(mode, module)] = found
                    for suffix in ("", "-wal", "-shm"):
                        try:
                            os.remove(os.path.join(app_dir, "fs.db" + suffix))
                        except FileNotFoundError:
                            pass
            reg = subprocess.run([sys.executable, "-c", REGISTRY_CHILD, str(p), str(l), implementation],
                                 env=env, capture_output=True, text=True, timeout=300)
            reg_found = re.search(r"RESULT nodes=(\d+) bytes=(\d+)", reg.stdout)
            if len(got) < 4:
                continue
            tree, flat = got[("traced", "pathtree")], got[("traced", "pathflat")]
            extra_nodes = r * (tree_nodes - flat_nodes)
            sensor = tree.group(1)
            print(f"  {sensor:9} registry nodes: tree {tree.group(2)}, flat {flat.group(2)}; "
                  f"window nodes held: tree {tree.group(3)}, flat {flat.group(3)}; folded: {tree.group(4)}/{flat.group(4)}")
            for mode, label in (("traced", "allocated (tracemalloc)"), ("rss", "RSS")):
                t, f = got[(mode, "pathtree")], got[(mode, "pathflat")]
                per = (int(t.group(5)) - int(f.group(5))) / extra_nodes
                print(f"  {sensor:9} window, {label:24}: tree +{int(t.group(5)) / 1024:8.1f} KiB, flat "
                      f"+{int(f.group(5)) / 1024:7.1f} KiB -> {per:6.1f} bytes per open path node per route; "
                      f"after the window closed: tree {int(t.group(6)) / 1024:+8.1f} KiB, flat {int(f.group(6)) / 1024:+7.1f} KiB")
            if reg_found:
                nodes, grown = int(reg_found.group(1)), int(reg_found.group(2))
                print(f"  {sensor:9} path registry (process-wide, once per node): {grown / nodes:6.1f} bytes per node "
                      f"({nodes} nodes, {grown / 1024:.1f} KiB allocated)")
            else:
                print(f"  {sensor:9} path registry: failed {reg.stderr[-800:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=5000)
    parser.add_argument("--routes", type=int, default=50)
    parser.add_argument("--parents", type=int, default=100)
    parser.add_argument("--leaves", type=int, default=100)
    parser.add_argument("--path-routes", type=int, default=10)
    parser.add_argument("--no-series", action="store_true", help="skip the function x route RSS runs")
    parser.add_argument("--no-paths", action="store_true", help="skip the bytes per path node runs")
    args = parser.parse_args()
    if not args.no_series:
        measure_series(args)
    if not args.no_paths:
        measure_paths(args)
    return 0


def measure_series(args) -> None:
    with tempfile.TemporaryDirectory(prefix="funcsight-mem-") as app_dir:
        with open(os.path.join(app_dir, "many.py"), "w") as handle:
            for i in range(args.functions):
                handle.write(f"def f{i}():\n    return {i}\n\n")
        print(f"Python {sys.version.split()[0]}: {args.functions} functions x {args.routes} routes, one call each per route")
        for implementation in ("c", "python"):
            for caps in ({"FUNCSIGHT_MAX_SERIES": str(args.functions * args.routes + 10), "FUNCSIGHT_MAX_ROUTES": "1000"}, {}):
                env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCSIGHT_")}
                env.update(caps, FUNCSIGHT_IMPLEMENTATION=implementation)
                result = subprocess.run([sys.executable, "-c", CHILD, app_dir, str(args.functions), str(args.routes)],
                                        env=env, capture_output=True, text=True, timeout=900)
                print(result.stdout.strip() or result.stderr.strip()[-800:])
                for suffix in ("", "-wal", "-shm"):
                    try:
                        os.remove(os.path.join(app_dir, "fs.db" + suffix))
                    except FileNotFoundError:
                        pass


if __name__ == "__main__":
    sys.exit(main())
