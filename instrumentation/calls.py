"""What the sensor produces: call tables, one per request plus one for background work.

A call table maps a function id to ``[calls, errors, total_ns, self_ns, {bucket: count}]`` and
``(function id, exception type)`` to a count and to the stack of the first exception seen. The sensor writes into the table of the request the
call ran in (found through a context variable, so threads and asyncio tasks never mix); the rollup
processor folds a request's table into its window once the request's route is known.

Durations are binned into the half-octave buckets of :mod:`funcsight.histogram`.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from funcsight.histogram import bucket_of, merge

CALLS, ERRORS, TOTAL_NS, SELF_NS, HIST = range(5)


class CallTable:
    __slots__ = ("stats", "errors", "samples", "paths", "path_errors", "open", "spans", "span_budget", "trace_id", "root")

    def __init__(self, span_budget: int = 0, trace_id: int = 0, root=None):
        self.stats: dict[int, list] = {}
        # Per path node (funcsight.instrumentation.paths): [calls, errors, total_ns, self_ns, the
        # function's stats list in this table (None in a window's table)]; errors by (node, type).
        self.paths: dict[int, list] = {}
        self.path_errors: dict[tuple[int, type], int] = {}
        self.errors: dict[tuple[int, type], int] = {}
        # Per (function id, type), the stack of the first exception (see stack_sample).
        self.samples: dict[tuple[int, type], tuple] = {}
        self.open = True
        # (function id, start ns, end ns, exception type or None): invocations worth a span.
        self.spans: list[tuple] = []
        self.span_budget = span_budget
        self.trace_id = trace_id
        self.root = root

    def add_call(self, fid: int, duration_ns: int, self_ns: int, exc_type: type | None = None, node: int = -1) -> None:
        """Record one call from outside the sensor (a span of another instrumentation), at path
        node ``node`` (a node of ``fid``; -1: none, the call is in the function's figures only)."""
        stats = self.stats.get(fid)
        if stats is None:
            stats = self.stats[fid] = new_stats()
        if node >= 0:
            at = self.paths.get(node)
            if at is None:
                at = self.paths[node] = [0, 0, 0, 0, stats]
            at[0] += 1
            at[2] += duration_ns
            at[3] += self_ns
            if exc_type is not None:
                at[1] += 1
                self.path_errors[(node, exc_type)] = self.path_errors.get((node, exc_type), 0) + 1
        stats[CALLS] += 1
        stats[TOTAL_NS] += duration_ns
        stats[SELF_NS] += self_ns
        bucket = bucket_of(duration_ns)
        stats[HIST][bucket] = stats[HIST].get(bucket, 0) + 1
        if exc_type is not None:
            stats[ERRORS] += 1
            key = (fid, exc_type)
            self.errors[key] = self.errors.get(key, 0) + 1


    def absorb(self, src: CallTable, room: int, overflow: CallTable) -> tuple[int, int]:
        """Add ``src``'s counters into this table (a window's table for one route), creating at
        most ``room`` new function entries; the calls of any further new function go to
        ``overflow`` (the window's overflow-route table). Returns ``(created, overflowed)``: entries
        made in both tables, functions sent to overflow. Errors by type are merged by the caller."""
        if src is self or src is overflow:
            raise ValueError("a table cannot absorb itself")
        created = overflowed = 0
        mine = self.stats
        for fid, stats in src.stats.items():
            into = mine.get(fid)
            if into is None:
                if room > 0:
                    room -= 1
                    into = mine[fid] = new_stats()
                    created += 1
                else:
                    overflowed += 1
                    into = overflow.stats.get(fid)
                    if into is None:
                        into = overflow.stats[fid] = new_stats()
                        created += 1
            merge_stats(into, stats)
        return created, overflowed

    def absorb_paths(self, src: CallTable, registry, room: int) -> tuple[int, int]:
        """Add ``src``'s path nodes into this table (a window's table for one route), creating at
        most ``room`` new nodes; a further new node is folded into the "(other paths)" child of its
        deepest ancestor this table keeps (the root at worst). Returns ``(created, folded)``."""
        if src is self:
            raise ValueError("a table cannot absorb itself")
        created = folded = 0
        mine = self.paths
        landed = {}
        for node, counts in src.paths.items():
            into = mine.get(node)
            target = node
            if into is None:
                if room > 0:
                    room -= 1
                    created += 1
                else:
                    folded += 1
                    kept = registry.parent_of(node)
                    while kept != 0 and kept not in mine:
                        kept = registry.parent_of(kept)
                    target = registry.other_of(kept)
                    into = mine.get(target)
                if into is None:
                    into = mine[target] = [0, 0, 0, 0, None]
            into[0] += counts[0]
            into[1] += counts[1]
            into[2] += counts[2]
            into[3] += counts[3]
            landed[node] = target
        errors = self.path_errors
        for (node, exc_type), count in src.path_errors.items():
            key = (landed.get(node, node), exc_type)
            errors[key] = errors.get(key, 0) + count
        return created, folded

    @property
    def path_count(self) -> int:
        return len(self.paths)

    @property
    def has_errors(self) -> bool:
        return bool(self.errors)

    @property
    def series(self) -> int:
        return len(self.stats)


current_request: ContextVar[CallTable | None] = ContextVar("funcsight_request", default=None)

try:  # the C sensor keeps a per-thread copy of the variable's value: it must hear of every set
    from funcsight.instrumentation._csensor import request_changed
except ImportError:  # no C extension: nothing to tell

    def request_changed() -> None:
        pass


def enter_request(table: CallTable | None) -> Token:
    """Make ``table`` the current context's request table: the one way to set
    :data:`current_request` (a plain ``set`` would leave the C sensor's copy stale)."""
    token = current_request.set(table)
    request_changed()
    return token


def leave_request(token: Token) -> None:
    """Undo :func:`enter_request`."""
    current_request.reset(token)
    request_changed()


MAX_STACK_FRAMES = 30


def stack_sample(exc: BaseException) -> tuple:
    """``(((code, offset), ...), None)``: the stack, outermost first (the callers of the function
    the exception is leaving, then down to the raise point), and no message. Code objects and
    instruction offsets only: keeping the exception would keep its frames, and so the application's
    locals, alive; and a frame's line number costs a walk of its code's line table, so lines are
    looked up (:func:`line_of`) only for the samples a window keeps. ``FUNCSIGHT_CAPTURE_MESSAGES``
    swaps in a sampler that also keeps the message. The C sensor uses its twin,
    ``_csensor.stack_sample`` (csensor/samples.h)."""
    return frames_of(exc), None


def frames_of(exc: BaseException) -> tuple:
    tb = exc.__traceback__
    if tb is None:
        return ()
    inner = []
    while tb is not None and len(inner) < MAX_STACK_FRAMES:
        inner.append((tb.tb_frame.f_code, tb.tb_lasti))
        tb = tb.tb_next
    outer = []
    frame = exc.__traceback__.tb_frame.f_back
    while frame is not None and len(outer) + len(inner) < MAX_STACK_FRAMES:
        outer.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    outer.reverse()
    return tuple(outer + inner)


def line_of(code, offset: int) -> int:
    """The source line of the instruction at byte ``offset`` in ``code`` (its first line when the
    offset has none, e.g. -1 for a frame that has not started)."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


def merge_stats(into: list, other: list) -> None:
    into[CALLS] += other[CALLS]
    into[ERRORS] += other[ERRORS]
    into[TOTAL_NS] += other[TOTAL_NS]
    into[SELF_NS] += other[SELF_NS]
    merge(into[HIST], other[HIST])


def new_stats() -> list:
    return [0, 0, 0, 0, {}]


class Sink:
    """Where calls go: the open request's table, else the background table. The rollup processor
    opens request tables with :meth:`new_table`; closing a window takes the background table with
    :meth:`take_background`. Each sensor makes its own sink, with its own table type (the C sensor
    brings C tables), chosen once when the sensor is made."""

    def __init__(self, table_type: type = CallTable, slow_ns: int = 50_000_000, sample_error=stack_sample):
        self.table_type = table_type
        self.background = self.new_table()
        self.slow_ns = slow_ns
        self.sample_error = sample_error  # exception -> (stack, message): once per function x type

    def new_table(self, span_budget: int = 0, trace_id: int = 0, root=None):
        return self.table_type(span_budget, trace_id, root)

    def take_background(self):
        """The background table, replaced by a fresh one (the export thread, once per window)."""
        table, self.background = self.background, self.new_table()
        return table
