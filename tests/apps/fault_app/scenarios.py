"""In-process concurrency scenarios: ``python scenarios.py IMPL SCENARIO [plain]``.

Instruments itself with ``FuncsightInstrumentor().instrument(implementation=IMPL, include=...)``
(unless ``plain``: the same scenario without funcsight, to compare what the application sees),
imports ``workload``, runs the scenario and prints one JSON line: the calls it made, per
(function, route), with the exception types that ended them, and what the application saw
(results, exceptions). The process then exits normally: funcsight flushes its window to the store
named by FUNCSIGHT_DB.
"""
import asyncio
import json
import os
import sys
import threading
import types
from collections import Counter

IMPL, SCENARIO = sys.argv[1], sys.argv[2]
PLAIN = len(sys.argv) > 3 and sys.argv[3] == "plain"
BACKGROUND = "(background)"
HAS_MONITORING = hasattr(sys, "monitoring")

if not PLAIN:
    from funcsight.agent import FuncsightInstrumentor

    FuncsightInstrumentor().instrument(app_dir=os.path.dirname(os.path.abspath(__file__)), implementation=IMPL, include=("workload",))
    running = FuncsightInstrumentor.running
    assert running is not None, "funcsight did not start"
    assert running.sensor.implementation.startswith(IMPL), running.sensor.implementation

from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

import workload  # noqa: E402  (imported after instrumenting: 3.11 rewrites it at import)

W = "workload."
tracer = trace.get_tracer("scenarios")
expected: Counter = Counter()  # (function, route) -> calls
errors: Counter = Counter()  # (function, route, exception type) -> calls
seen: dict = {}


def request(route):
    return tracer.start_as_current_span(f"GET {route}", kind=SpanKind.SERVER, attributes={"http.route": route})


def count(name, route, calls, error=None):
    expected[(W + name, route)] += calls
    if error:
        errors[(W + name, route, error)] += calls


# ------------------------------------------------------------------------------------ scenarios
def threads():
    n_threads, per_thread = 16, 150
    barrier = threading.Barrier(n_threads)
    results = [0] * n_threads

    def worker(t):
        barrier.wait(10)
        total = 0
        for k in range(per_thread):
            with request(f"/t{t % 4}"):
                total += workload.handle(k)
            total += workload.leaf(k)  # outside any request
        results[t] = total

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    seen["results"] = results
    for t in range(n_threads):
        count("handle", f"/t{t % 4}", per_thread)
        count("leaf", f"/t{t % 4}", 3 * per_thread)
    count("leaf", BACKGROUND, n_threads * per_thread)


def many_tasks():
    n_requests, n_background = 3000, 2000

    async def one_request(i):
        with request("/async"):
            return await workload.atask(i)

    async def main():
        results = await asyncio.gather(*(one_request(i) for i in range(n_requests)), *(workload.atask(i) for i in range(n_background)))
        return sum(results)

    seen["sum"] = asyncio.run(main())
    count("atask", "/async", n_requests)
    count("ainner", "/async", 2 * n_requests)
    count("leaf", "/async", 2 * n_requests)
    count("atask", BACKGROUND, n_background)
    count("ainner", BACKGROUND, 2 * n_background)
    count("leaf", BACKGROUND, 2 * n_background)


def cancellation():
    n = 1000

    async def one_request():
        with request("/cancel"):
            await workload.sleeper()

    async def main():
        tasks = [asyncio.create_task(one_request()) for _ in range(n)]
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return Counter(type(outcome).__name__ for outcome in outcomes)

    seen["outcomes"] = dict(asyncio.run(main()))
    cancelled = "asyncio.exceptions.CancelledError"
    count("sleeper", "/cancel", n, cancelled)
    count("deep_sleep", "/cancel", n, cancelled)


def generators():
    n = 1000
    with request("/gen"):
        taken = []
        for _ in range(n):  # closed early
            g = workload.gen(10)
            taken += [next(g), next(g)]
            g.close()
        for _ in range(n):  # abandoned while suspended
            g = workload.gen(10)
            taken.append(next(g))
            del g
        for _ in range(n):  # exhausted
            taken += list(workload.gen(3))
        thrown = 0
        for _ in range(n // 2):  # an exception thrown in, not caught: it ends the generator
            g = workload.gen_thrown(5)
            next(g)
            try:
                g.throw(ValueError("thrown"))
            except ValueError:
                thrown += 1
        caught = []
        for _ in range(n // 2):  # thrown in and caught: the generator goes on
            g = workload.gen_catching(5)
            next(g)
            caught.append(g.throw(ValueError("thrown")))
            g.close()
    seen.update(taken=sum(taken), thrown=thrown, caught=sum(caught))
    if sys.version_info >= (3, 13):
        # 3.13 sends no event when a suspended generator is closed or dropped: the sensor finishes
        # it when the export thread sweeps, after the request ended, so it counts as background
        # work (README, "Limits worth knowing"). Counts stay exact.
        count("gen", "/gen", n)
        count("gen", "(background)", 2 * n)
    else:
        count("gen", "/gen", 3 * n)
    count("gen_thrown", "/gen", n // 2, "ValueError")
    count("gen_catching", "/gen", n // 2)


def thrown_into_coroutines():
    n = 500
    outcomes = Counter()
    with request("/throw"):
        for _ in range(n):  # thrown in and caught: the coroutine returns
            coro = workload.acatch()
            coro.send(None)
            try:
                coro.throw(KeyError("k"))
            except StopIteration as stop:
                outcomes[stop.value] += 1
        for _ in range(n):  # thrown in, not caught
            coro = workload.athrown()
            coro.send(None)
            try:
                coro.throw(ValueError("v"))
            except ValueError:
                outcomes["raised"] += 1

    async def main():
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(n)]
        with request("/future"):
            tasks = [asyncio.create_task(workload.await_future(f)) for f in futures]
            await asyncio.sleep(0)
            for future in futures:
                future.set_exception(LookupError("from the future"))
            results = await asyncio.gather(*tasks, return_exceptions=True)
        return Counter(type(r).__name__ for r in results)

    outcomes.update(asyncio.run(main()))
    seen["outcomes"] = dict(outcomes)
    count("acatch", "/throw", n)
    count("athrown", "/throw", n, "ValueError")
    # Suspend.__await__ is a generator of the app too: the thrown exceptions leave it first.
    count("Suspend.__await__", "/throw", n, "KeyError")
    count("Suspend.__await__", "/throw", n, "ValueError")
    count("await_future", "/future", n, "LookupError")


def recursion():
    limit = sys.getrecursionlimit()
    depth = limit - 60  # as deep as the application itself can go, with a margin for its callers
    with request("/rec"):
        seen["rec"] = workload.rec(depth)
        try:
            workload.infinite(0)
            seen["infinite"] = "returned"
        except RecursionError:
            seen["infinite"] = "RecursionError"
        seen["reached"] = workload.REACHED
        seen["after"] = workload.leaf(1)  # the sensor's stack is sound after the error
    count("rec", "/rec", depth + 1)
    count("leaf", "/rec", 1)
    # infinite(): every frame that ran ended by the RecursionError (checked by the test).


def runtime_functions():
    n = 100
    namespace = workload.__dict__
    exec(compile(workload.RUNTIME_SOURCE, "<runtime>", "exec"), namespace)
    closures = [workload.factory(k) for k in range(5)]
    twin = types.FunctionType(workload.leaf.__code__, namespace, "twin")  # same code: same function
    total = 0
    with request("/runtime"):
        for i in range(n):
            total += workload.made_at_runtime(i)
            total += workload.MadeAtRuntime().method(i)
            total += workload.make_lambda()(i)
            total += closures[i % 5](i)
            total += twin(i)
    seen["total"] = total
    count("factory", BACKGROUND, 5)
    count("make_lambda", "/runtime", n)
    count("factory.<locals>.closure", "/runtime", n)
    count("leaf", "/runtime", n + n + n)  # from closure, made_at_runtime, and the twin
    if HAS_MONITORING:  # 3.11's import-time rewriter senses neither exec'd code nor lambdas (documented)
        count("made_at_runtime", "/runtime", n)
        count("MadeAtRuntime.method", "/runtime", n)
        count("make_lambda.<locals>.<lambda>", "/runtime", n)


SCENARIOS = {
    "threads": threads,
    "asyncio-tasks": many_tasks,
    "cancellation": cancellation,
    "generators": generators,
    "thrown-into-coroutines": thrown_into_coroutines,
    "recursion": recursion,
    "runtime-functions": runtime_functions,
}

if __name__ == "__main__":
    raised = None
    try:
        SCENARIOS[SCENARIO]()
    except BaseException as err:  # reported, so the test can say what reached the application
        raised = f"{type(err).__name__}: {err}"
    report = {
        "expected": [[name, route, calls] for (name, route), calls in expected.items()],
        "errors": [[name, route, exc, calls] for (name, route, exc), calls in errors.items()],
        "seen": seen,
        "raised": raised,
        "internal_errors": None if PLAIN else running.sensor.internal_errors,
    }
    print(json.dumps(report), flush=True)
