"""httpbin (PyPI ``httpbin``, a real Flask app in site-packages) as a benchmark app.

Served by ``bench/macro.py`` as ``gunicorn -w 1 app:app`` and driven in-process by
``bench/instructions.py``, like ``flaskbench``; this module only adds what the benchmarks read:
an SDK tracer provider in every OTel column (``BENCH_OTEL_SDK``), ``GET /_bench/meta`` and the
request path (``BENCH_PATH``). httpbin's code lives in site-packages, outside the application's
directory, so the benchmarks sense it with ``FUNCSIGHT_INCLUDE=+httpbin`` (and ``+flask,+werkzeug``
for "app + framework").

Sensed calls per request are not fixed here (they depend on the include and on httpbin's and
werkzeug's versions): ``FUNCTIONS_PER_REQUEST`` is None and the benchmarks report what the store
or the window recorded instead of checking it against a constant.
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_OTEL_SDK"):
    # As flaskbench: "OTel alone" means an SDK behind the API in every OTel column.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())

from shop.benchmeta import describe  # noqa: E402
from httpbin import app  # noqa: E402  (after the provider, as an app's own OTel setup would be)

FUNCTIONS_PER_REQUEST = None
ROUTE = "/get"
BENCH_PATH = "/get?order={i}"  # {i}: the request's number modulo 997, as /order/{i} in flaskbench


def meta():
    """What is really running in this process: the benchmark prints it next to the figures."""
    return describe(type(app).__name__ != "Flask", FUNCTIONS_PER_REQUEST, ROUTE)  # the OTel Flask instrumentation swaps the class


app.add_url_rule("/_bench/meta", "_bench_meta", meta)
