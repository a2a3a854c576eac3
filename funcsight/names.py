"""Metric, attribute and scope names: one place, so the store, OTLP and the docs agree."""

SCOPE = "funcsight"

# Semantic conventions v1.33+ (stable).
CODE_FUNCTION_NAME = "code.function.name"
CODE_FILE_PATH = "code.file.path"
CODE_LINE_NUMBER = "code.line.number"
HTTP_ROUTE = "http.route"
EXCEPTION_TYPE = "exception.type"
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
SERVICE_INSTANCE_ID = "service.instance.id"

# funcsight's own attributes.
CALLER = "funcsight.caller"  # the calling function of an edge; ROUTE_ENTRY at the route's entry
FUNCTION_KIND = "funcsight.function.kind"  # "function" (sensed code) or "span" (another span)
BUCKET_LE = "le"  # upper bound of a duration bucket, seconds, as Prometheus spells it

# Metrics (OpenTelemetry names; Prometheus renders them as noted).
FUNCTION_CALLS = "funcsight.function.calls"  # funcsight_function_calls_total
FUNCTION_ERRORS = "funcsight.function.errors"  # funcsight_function_errors_total
FUNCTION_DURATION = "funcsight.function.duration"  # funcsight_function_duration_seconds_total
FUNCTION_SELF_TIME = "funcsight.function.self_time"  # funcsight_function_self_time_seconds_total
FUNCTION_DURATION_BUCKETS = "funcsight.function.duration.buckets"  # ..._buckets_total{le=...}
ROUTE_REQUESTS = "funcsight.route.requests"  # funcsight_route_requests_total
ROUTE_ERRORS = "funcsight.route.errors"
ROUTE_DURATION = "funcsight.route.duration"
ROUTE_DURATION_BUCKETS = "funcsight.route.duration.buckets"
EDGE_CALLS = "funcsight.edge.calls"  # funcsight_edge_calls_total{funcsight_caller=...}
EDGE_DURATION = "funcsight.edge.duration"  # funcsight_edge_duration_seconds_total
EDGE_SELF_TIME = "funcsight.edge.self_time"  # funcsight_edge_self_time_seconds_total
DROPPED = "funcsight.dropped"  # series, spans or windows funcsight had to drop, by reason
INTERNAL_ERRORS = "funcsight.internal_errors"  # failures inside funcsight, by component

# funcsight's own counters: each is a field of a window's counters and a column of the store's
# ``windows`` table (that window's delta), exported as ``funcsight.dropped{reason}`` or
# ``funcsight.internal_errors{component}``.
DROPPED_REASONS = (
    ("overflow_series", "series_cap"),  # function x route entries past FUNCSIGHT_MAX_SERIES: to (overflow)
    ("overflow_routes", "route_cap"),  # requests past FUNCSIGHT_MAX_ROUTES: counted under (overflow)
    ("registry_dropped", "function_cap"),  # code past FUNCSIGHT_MAX_FUNCTIONS: counted under (overflow)
    ("overflow_paths", "path_cap"),  # call-tree nodes past FUNCSIGHT_MAX_PATHS: folded into (other paths)
    ("paths_dropped", "path_node_cap"),  # call edges past the process's node cap: folded likewise
    ("dropped_span_batches", "span_queue_full"),  # requests whose function spans found the queue full
    ("dropped_windows", "store_window_dropped"),  # windows the store writer could not keep (store down)
    ("span_export_failures", "span_export_failed"),  # spans an exporter funcsight built could not deliver
)
INTERNAL_ERROR_COMPONENTS = (
    ("sensor_errors", "sensor"),  # failures inside the sensor (never raised into the application)
    ("processor_failures", "processor"),  # spans the rollup processor left alone after a failure
    ("consumer_failures", "exporter"),  # a window an exporter (store, metrics, spans) failed on
)

BACKGROUND_ROUTE = "(background)"  # calls that ran outside any request or task
UNMATCHED_ROUTE = "(unmatched)"  # a request whose framework set no route (404s)
OVERFLOW_ROUTE = "(overflow)"
ROUTE_ENTRY = "(route)"  # the caller of a route's entry points, in call edges
# Calls of code past FUNCSIGHT_MAX_FUNCTIONS, per route, under one pseudo function per way of running.
OVERFLOW_FUNCTION = "(overflow)"
OVERFLOW_GENERATORS = "(overflow generators)"
OVERFLOW_COROUTINES = "(overflow coroutines)"
OTHER_PATHS = "(other paths)"  # a call-tree node the path caps folded  # series beyond the cardinality cap
