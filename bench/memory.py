"""Memory benchmark: RSS with 5,000 sensed functions x 50 routes, side by side with the caps.

Generates a module of N functions in a scratch directory, senses it in-process with the real
instrumentor (C sensor when built, else Python), and runs R "requests" (real SDK SERVER spans, each
with its own ``http.route``) that each call every function once, so one window holds N x R
function x route series. Prints RSS before sensing, after the first window filled, and after it was
exported, for three settings: the series cap raised to hold everything, and the default caps.

    python bench/memory.py [--functions 5000] [--routes 50]
"""

from __future__ import annotations

import argparse
import os
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=5000)
    parser.add_argument("--routes", type=int, default=50)
    args = parser.parse_args()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
