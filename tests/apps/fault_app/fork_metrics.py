"""OpenTelemetry metrics across a fork: the parent's funcsight counters hold 3 calls when it forks;
the child then makes 2. The child must export 2 (not the 5 of a copied cumulative total), under
the service.instance.id the SDK gave it, which is also the one its store rows carry.

Uses the application's own providers (an in-memory metric reader), as an app that configures the
SDK itself would. Prints one JSON line per process: calls of forkwork.parent_work and the instance id.
"""
import json
import os

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
trace.set_tracer_provider(TracerProvider())

from funcsight.agent import FuncsightInstrumentor  # noqa: E402

FuncsightInstrumentor().instrument()
import forkwork  # noqa: E402  (imported after instrumenting: sensed on 3.11 too)


def exported() -> dict:
    """funcsight.function.calls of forkwork.parent_work, and the resource's service.instance.id."""
    FuncsightInstrumentor.running.pipeline.flush()
    calls, instance = 0, None
    for resource_metrics in reader.get_metrics_data().resource_metrics:
        instance = resource_metrics.resource.attributes.get("service.instance.id")
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "funcsight.function.calls":
                    calls += sum(p.value for p in metric.data.data_points
                                 if p.attributes.get("code.function.name") == "forkwork.parent_work")
    return {"pid": os.getpid(), "calls": calls, "instance": instance}


def main():
    for _ in range(3):
        forkwork.parent_work()
    parent_before = exported()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        for _ in range(2):
            forkwork.parent_work()
        report = exported()
        FuncsightInstrumentor.running.pipeline.flush()
        os.write(write, json.dumps(report).encode())
        os.close(write)
        FuncsightInstrumentor().uninstrument()
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = json.loads(pipe.read() or "null")
    os.waitpid(pid, 0)
    forkwork.parent_work()
    print(json.dumps({"parent_before": parent_before, "parent_after": exported(), "child": child}), flush=True)
    FuncsightInstrumentor().uninstrument()


if __name__ == "__main__":
    main()
