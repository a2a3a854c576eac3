"""Contract of ``funcsight.instrumentation._csensor``, the C hot path of the sensor.

Semantics are those of :class:`funcsight.instrumentation._pysensor.PythonSensor` (the reference
twin); :class:`funcsight.instrumentation.csensor.CSensor` wraps a :class:`Core` with the twin's
classification. Nothing here raises into the application: failures on the hot path are counted in
:attr:`Core.internal_errors`.
"""

from contextvars import ContextVar
from types import CodeType
from typing import Any, Callable, TypeVar

_T = TypeVar("_T")

HAS_MONITORING: int  # 1 when built for Python 3.12+ (the on_* callbacks exist)
PLAIN: int  # function kinds, as _pysensor.PLAIN/GENERATOR/COROUTINE
GENERATOR: int
COROUTINE: int

def bucket_of(duration_ns: int) -> int:
    """Exactly ``calls.bucket_of`` (for -2**63 < duration_ns < 2**63)."""

def request_changed() -> None:
    """calls.current_request was set: the sensor's per-thread copy of its value is stale."""

def now_ns() -> int:
    """The sensor's clock: CLOCK_MONOTONIC nanoseconds (what ``time.perf_counter_ns`` reads on
    Linux), from the TSC mapped onto it where the kernel uses the TSC, else clock_gettime."""

def clock() -> str:
    """``"tsc"`` or ``"monotonic"``: what :func:`now_ns` reads."""

def use_clock(name: str) -> str:
    """Force ``"monotonic"`` or (where the platform allows it) ``"tsc"``; returns the clock in use.
    Tests and benchmarks only: switch while no sensed call is in flight."""

def _floor(*args: Any) -> Any:
    """REFERENCE.md's prototype callback (count + clock_gettime): a yardstick for bench/micro.py.
    Returns its first argument (None without), so it can also stand in for a 3.11 enter()."""

def _floor2(token: Any, value: Any = None) -> Any:
    """The same yardstick for the 3.11 hooks that pass a value through (resume, yield_, await_)."""

def _clock_state() -> tuple[int, int, int, int, int, int] | None:
    """(map_tsc, map_ns, map_mult, cal_tsc, cal_ns, last_cal_ns) of the TSC map (tests)."""

class CallTable:
    """Calls of one request (or of the background), in ``calls.CallTable``'s format. Counting is
    allocation-free per call (open addressing by function id, inline histogram buckets);
    ``stats`` and ``errors`` build fresh dicts on every read (read once, at merge time)."""

    open: bool  # settable; False once the request ended (calls then go to the background)
    span_budget: int  # spans this table may still keep
    trace_id: Any
    root: Any
    spans: list[tuple[int, int, int, type | None]]  # (fid, start_ns, end_ns, exc_type or None)

    def __init__(self, span_budget: int = 0, trace_id: Any = 0, root: Any = None) -> None: ...
    @property
    def stats(self) -> dict[int, list]:
        """``{fid: [calls, errors, total_ns, self_ns, {bucket: count}]}`` (a fresh dict)."""

    @property
    def errors(self) -> dict[tuple[int, type], int]:
        """``{(fid, exception type): count}`` (a fresh dict; types are kept as strong refs)."""

    def add_call(self, fid: int, duration_ns: int, self_ns: int, exc_type: type | None = None) -> None:
        """One call from outside the sensor (counted, never kept as a span); 0 <= fid < 2**31-1."""

class Invocation:
    """3.11 token of a generator or coroutine invocation (plain calls get an int token)."""

class Core:
    """One sensor's hot path. ``classify(code, module_name) -> fid or -1`` is called once per code
    object (3.12+); its answer is stored in the code object's co_extra slot, tagged with this core."""

    background: CallTable  # settable (CallTable only): where calls outside an open request go
    slow_ns: int  # settable: calls at least this long become spans while a table's budget lasts
    internal_errors: int  # settable: failures swallowed on the hot path
    @property
    def parked(self) -> int:
        """Suspended generators/coroutines parked by on_yield (3.12+)."""

    def __init__(
        self,
        classify: Callable[[CodeType, str], int],
        current_request: ContextVar,
        slow_ns: int = 50_000_000,
    ) -> None: ...

    # sys.monitoring callbacks (3.12+), registered by CSensor.start() for tool id 4 (else 3).
    # Unsensed code gets sys.monitoring.DISABLE from start/return/yield/resume; never from
    # unwind/throw.
    def on_start(self, code: CodeType, offset: int) -> Any: ...
    def on_return(self, code: CodeType, offset: int, retval: Any) -> Any: ...
    def on_unwind(self, code: CodeType, offset: int, exc: BaseException) -> None: ...
    def on_yield(self, code: CodeType, offset: int, retval: Any) -> Any: ...
    def on_resume(self, code: CodeType, offset: int) -> Any: ...
    def on_throw(self, code: CodeType, offset: int, exc: BaseException) -> None: ...

    # The 3.11 front end (rewritten code). Tokens: the invocation's depth on the thread's stack
    # (an int, no allocation below depth 257) for plain functions, an Invocation for generators
    # and coroutines (kind from set_kind). None when enter() failed; every hook accepts it.
    def enter(self, fid: int) -> int | Invocation | None: ...
    def leave(self, token: Any, exc: BaseException | None = None) -> None: ...
    def suspend(self, token: Any) -> None: ...
    def resume(self, token: Any, value: _T = None) -> _T: ...
    # The rest of rewrite.py's hook set (its _make_hooks semantics on C tokens).
    def enter_co(self, fid: int) -> int | Invocation | None: ...
    def unwind(self, token: Any, exc: BaseException | None = None) -> None: ...
    def yield_(self, token: Any, value: _T) -> _T: ...
    def await_(self, token: Any, awaitable: _T) -> _T: ...

    def sweep_parked(self) -> None:
        """Finish parked invocations whose generator is gone (3.13 sends no event when a suspended
        generator is closed); also re-anchors the TSC clock map. Call it periodically."""

    def set_kind(self, fid: int, kind: int) -> None: ...
    def stack_depth(self) -> int:
        """In-flight sensed invocations on the calling thread."""

    def stack_fids(self) -> list[int]:
        """Function ids of the calling thread's in-flight invocations, bottom first."""
