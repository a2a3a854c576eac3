"""Store schema: ordered migrations, the version recorded in ``PRAGMA user_version``.

Tables (also the documented views for SQL readers):

* ``processes``: one row per process that wrote: service, version (and where it came from),
  ``service.instance.id``, pid, host, start time.
* ``functions``: identity (``name`` = ``module.qualname``, or a span name for ``kind='span'``).
* ``function_code``: per function and version, file, first line and code hash.
* ``windows``: one export interval of one process (epoch seconds).
* ``function_stats``: per window, function and route: calls, errors, total and self time (ns) and
  the duration histogram as JSON ``{bucket: count}`` (half-octave buckets, see ``calls.py``).
* ``function_errors``: per window, function, route and exception type: count.
* ``route_stats``: per window and route: requests, failed requests, total ns, histogram.
* ``error_samples``: per window, function, route and exception type, the first occurrence: its
  stack (JSON ``[[function, file, line], ...]``), the message only when captured (opt-in), and the
  request's trace and root span ids.
* ``spans``: function spans (slow or failing calls in sampled traces) with trace and span ids.
* ``path_nodes`` (schema 2): per window and route, one row per node of the call tree: ``path`` is
  the store ids of the functions from the route's entry down to the node, joined by ``/``
  (``*`` stands for an "(other paths)" node, which has no ``function_id``); calls, errors, total
  and self time (ns). A function's ``function_stats`` equal the sum over its nodes.
* ``path_errors`` (schema 2): per window, route, path and exception type: count.
* ``windows.overflow_paths`` (schema 2): path nodes folded into "(other paths)" by the caps.
* ``windows`` funcsight's own counters (schema 3), each the window's delta, named as in
  ``funcsight.names.DROPPED_REASONS`` / ``INTERNAL_ERROR_COMPONENTS``: ``registry_dropped`` (code
  past FUNCSIGHT_MAX_FUNCTIONS, its calls under ``(overflow)``), ``paths_dropped``,
  ``dropped_span_batches``, ``dropped_windows`` (windows the writer could not keep: recorded in the
  next window it writes), ``span_export_failures``, ``sensor_errors``, ``processor_failures``,
  ``consumer_failures``.

Migrations run once, in order, in one transaction each; a store of an older schema is upgraded
when a writer opens it (readers read it as it is: an old store simply has no paths).
"""

APPLICATION_ID = 0x46534954  # "FSIT": marks the file as a funcsight store

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE processes (
            id INTEGER PRIMARY KEY,
            service TEXT NOT NULL,
            version TEXT NOT NULL,
            version_source TEXT NOT NULL,
            instance_id TEXT NOT NULL UNIQUE,
            pid INTEGER NOT NULL,
            host TEXT NOT NULL,
            started_at REAL NOT NULL
        )""",
        """CREATE TABLE functions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            UNIQUE (name, kind)
        )""",
        """CREATE TABLE function_code (
            function_id INTEGER NOT NULL REFERENCES functions(id),
            version TEXT NOT NULL,
            file TEXT NOT NULL,
            line INTEGER NOT NULL,
            code_hash TEXT NOT NULL,
            PRIMARY KEY (function_id, version)
        )""",
        """CREATE TABLE windows (
            id INTEGER PRIMARY KEY,
            process_id INTEGER NOT NULL REFERENCES processes(id),
            start REAL NOT NULL,
            end REAL NOT NULL,
            overflow_series INTEGER NOT NULL DEFAULT 0,
            overflow_routes INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE function_stats (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            function_id INTEGER NOT NULL REFERENCES functions(id),
            route TEXT NOT NULL,
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            total_ns INTEGER NOT NULL,
            self_ns INTEGER NOT NULL,
            hist TEXT NOT NULL
        )""",
        """CREATE TABLE function_errors (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            function_id INTEGER NOT NULL REFERENCES functions(id),
            route TEXT NOT NULL,
            exception_type TEXT NOT NULL,
            count INTEGER NOT NULL
        )""",
        """CREATE TABLE route_stats (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            route TEXT NOT NULL,
            requests INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            total_ns INTEGER NOT NULL,
            hist TEXT NOT NULL
        )""",
        """CREATE TABLE spans (
            trace_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_span_id TEXT,
            process_id INTEGER REFERENCES processes(id),
            name TEXT NOT NULL,
            start REAL NOT NULL,
            duration_ns INTEGER NOT NULL,
            exception_type TEXT,
            attributes TEXT NOT NULL
        )""",
        """CREATE TABLE error_samples (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            function_id INTEGER NOT NULL REFERENCES functions(id),
            route TEXT NOT NULL,
            exception_type TEXT NOT NULL,
            stack TEXT NOT NULL,
            message TEXT,
            trace_id TEXT,
            span_id TEXT,
            seen_at REAL NOT NULL
        )""",
        "CREATE INDEX function_stats_window ON function_stats(window_id)",
        "CREATE INDEX function_errors_window ON function_errors(window_id)",
        "CREATE INDEX route_stats_window ON route_stats(window_id)",
        "CREATE INDEX windows_process ON windows(process_id)",
    ],
    [
        """CREATE TABLE path_nodes (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            route TEXT NOT NULL,
            path TEXT NOT NULL,
            function_id INTEGER REFERENCES functions(id),
            calls INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            total_ns INTEGER NOT NULL,
            self_ns INTEGER NOT NULL
        )""",
        """CREATE TABLE path_errors (
            window_id INTEGER NOT NULL REFERENCES windows(id),
            route TEXT NOT NULL,
            path TEXT NOT NULL,
            exception_type TEXT NOT NULL,
            count INTEGER NOT NULL
        )""",
        "ALTER TABLE windows ADD COLUMN overflow_paths INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX path_nodes_window ON path_nodes(window_id)",
        "CREATE INDEX path_errors_window ON path_errors(window_id)",
    ],
    [
        f"ALTER TABLE windows ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
        for column in ("registry_dropped", "paths_dropped", "dropped_span_batches", "dropped_windows",
                       "span_export_failures", "sensor_errors", "processor_failures", "consumer_failures")
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)


def _tables_after(count: int) -> frozenset[str]:
    names = set()
    for statements in MIGRATIONS[:count]:
        for statement in statements:
            words = statement.split()
            if words[:2] == ["CREATE", "TABLE"]:
                names.add(words[2])
    return frozenset(names)


# schema version -> the tables a store of that version holds (a writer checks them before writing)
EXPECTED_TABLES = {version: _tables_after(version) for version in range(1, SCHEMA_VERSION + 1)}
