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

BACKGROUND_ROUTE = "(background)"  # calls that ran outside any request or task
UNMATCHED_ROUTE = "(unmatched)"  # a request whose framework set no route (404s)
OVERFLOW_ROUTE = "(overflow)"
ROUTE_ENTRY = "(route)"  # the caller of a route's entry points, in call edges
# Calls of code past FUNCSIGHT_MAX_FUNCTIONS, per route, under one pseudo function per way of running.
OVERFLOW_FUNCTION = "(overflow)"
OVERFLOW_GENERATORS = "(overflow generators)"
OVERFLOW_COROUTINES = "(overflow coroutines)"
OTHER_PATHS = "(other paths)"  # a call-tree node the path caps folded  # series beyond the cardinality cap
