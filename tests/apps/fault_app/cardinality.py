"""Cardinality attacks, in-process: ``python cardinality.py IMPL KIND N [plain]``.

* ``routes``: N requests, each under its own ``http.route`` (a real TracerProvider, real SERVER
  spans), each calling ``workload.handle`` (which calls ``leaf`` three times);
* ``functions``: N distinct functions created at runtime (``exec`` on 3.12+; generated modules
  imported on 3.11, whose rewriter senses only imported code), each called once in a request.

Prints one JSON line: the window's sizes and overflow counters before the exit flush, the
registry's size and drops, and the process's RSS before and after. ``plain`` runs the same without
funcsight (RSS only), for comparison.
"""
import gc
import json
import os
import sys
import time

IMPL, KIND, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
PLAIN = len(sys.argv) > 4 and sys.argv[4] == "plain"
HERE = os.path.dirname(os.path.abspath(__file__))
BATCH = 1000


def rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if not PLAIN:
    from funcsight.agent import FuncsightInstrumentor

    FuncsightInstrumentor().instrument(app_dir=HERE, implementation=IMPL, include=("workload", "made_*"))
    running = FuncsightInstrumentor.running
else:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())

from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

import workload  # noqa: E402

tracer = trace.get_tracer("cardinality")


def request(route):
    return tracer.start_as_current_span(f"GET {route}", kind=SpanKind.SERVER, attributes={"http.route": route})


def batches_of_functions():
    """Yields lists of new functions, BATCH at a time; the caller drops each batch after use."""
    made = 0
    while made < N:
        size = min(BATCH, N - made)
        names = [f"f{made + i}" for i in range(size)]
        source = "".join(f"def {name}(x):\n    return x + {made + i}\n" for i, name in enumerate(names))
        if hasattr(sys, "monitoring"):
            namespace = {"__name__": "workload"}  # runtime code of the app's module
            exec(compile(source, "<generated>", "exec"), namespace)
        else:
            module = f"made_{made // BATCH}"
            with open(os.path.join(HERE, module + ".py"), "w") as handle:
                handle.write(source)
            namespace = __import__(module).__dict__
            del sys.modules[module]
        yield [namespace[name] for name in names]
        made += size


def main():
    for i in range(200):  # warm-up: everything that is allocated once is allocated
        with request("/warm"):
            workload.handle(i)
    gc.collect()
    rss_before = rss_kb()
    began = time.monotonic()
    if KIND == "routes":
        for i in range(N):
            with request(f"/r/{i}"):
                workload.handle(i)
    else:
        for batch in batches_of_functions():
            with request("/functions"):
                for function in batch:
                    function(1)
            del batch
    gc.collect()
    report = {"rss_before_kb": rss_before, "rss_after_kb": rss_kb(), "n": N, "seconds": round(time.monotonic() - began, 2)}
    if not PLAIN:
        window = running.windows.open_counts()  # still open: the exit flush writes it to the store
        report.update(
            routes=window["routes"],
            series=running.windows.open_series,
            overflow_routes=window["overflow_routes"],
            overflow_series=window["overflow_series"],
            requests=window["requests"],
            registered=len(running.registry),
            registry_dropped=running.registry.dropped,
            max_routes=running.config.max_routes,
            max_series=running.config.max_series,
            max_functions=running.config.max_functions,
        )
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
