"""Function identity: a dense integer id per sensed function, and what that id stands for.

Identity is ``module.qualname`` (``shop.models.Cart.total``): it survives edits to the body and
moves within the file, so deployments can be compared. File, first line and a hash of the code are
recorded beside it. Ids index flat tables on the hot path, so they are small and never reused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import CodeType

from funcsight import names
from funcsight.codehash import code_hash

FUNCTION = "function"
SPAN = "span"
# How a function runs, as the sensors need to know it (their per-invocation bookkeeping differs).
PLAIN, GENERATOR, COROUTINE = 0, 1, 2
# The pseudo function that counts the calls of code past FUNCSIGHT_MAX_FUNCTIONS, one per way of
# running: an invocation's bookkeeping follows its function id's kind (the 3.11 hooks and the
# Python sensor read it by id), so a generator cannot share the plain functions' id.
OVERFLOW_NAMES = {
    PLAIN: names.OVERFLOW_FUNCTION,
    GENERATOR: names.OVERFLOW_GENERATORS,
    COROUTINE: names.OVERFLOW_COROUTINES,
}


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    kind: str  # FUNCTION for sensed code, SPAN for spans of other instrumentations
    file: str = ""
    line: int = 0
    code_hash: str = ""
    is_generator: bool = False  # generators, coroutines and async generators


CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR = 0x20, 0x80, 0x100, 0x200
_SUSPENDING = CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR


def function_info(code: CodeType, module: str) -> FunctionInfo:
    return FunctionInfo(
        name=f"{module}.{code.co_qualname}",
        kind=FUNCTION,
        file=code.co_filename,
        line=code.co_firstlineno,
        code_hash=code_hash(code),
        is_generator=bool(code.co_flags & _SUSPENDING),
    )


class FunctionRegistry:
    """Append-only table of sensed functions; ``max_functions`` bounds it. Code past the cap is
    still counted: it gets the id of an overflow pseudo function (``(overflow)``, one per way of
    running and kind, made when first needed, beyond the cap), so its calls land per route under
    that name, and ``dropped`` counts the code objects (or span names) that got it."""

    def __init__(self, max_functions: int = 20_000):
        self.max_functions = max_functions
        self.functions: list[FunctionInfo] = []
        self.dropped = 0
        self._ids: dict[tuple[str, str], int] = {}
        self._overflow_ids: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.functions)

    def register(self, info: FunctionInfo, runs: int = PLAIN) -> int:
        """The id of ``info`` (an existing one when the same name was registered); past the cap,
        the id of the overflow function for ``runs`` (PLAIN, GENERATOR or COROUTINE)."""
        key = (info.name, info.kind)
        with self._lock:
            fid = self._ids.get(key)
            if fid is not None:
                return fid
            if len(self.functions) - len(self._overflow_ids) >= self.max_functions:
                self.dropped += 1
                return self._overflow_id(info.kind, runs)
            return self._add(key, info)

    def _add(self, key: tuple[str, str], info: FunctionInfo) -> int:
        fid = len(self.functions)
        self.functions.append(info)
        self._ids[key] = fid
        return fid

    def _overflow_id(self, kind: str, runs: int) -> int:
        name = OVERFLOW_NAMES.get(runs, names.OVERFLOW_FUNCTION)
        fid = self._ids.get((name, kind))
        if fid is None:
            fid = self._add((name, kind), FunctionInfo(name=name, kind=kind, is_generator=runs != PLAIN))
            self._overflow_ids.add(fid)
        return fid

    def is_overflow(self, fid: int) -> bool:
        """Whether ``fid`` is an overflow pseudo function (it stands for many code objects)."""
        return fid in self._overflow_ids

    def register_span(self, span_name: str) -> int:
        return self.register(FunctionInfo(name=span_name, kind=SPAN))

    def lookup(self, name: str, kind: str = FUNCTION) -> int | None:
        return self._ids.get((name, kind))

    def reset_after_fork(self) -> None:
        """In a forked child: a thread of the parent may have been registering a function at the
        fork, so the lock may have been copied held. The functions stay (ids are never reused)."""
        self._lock = threading.Lock()


__all__ = ["COROUTINE", "FUNCTION", "FunctionInfo", "FunctionRegistry", "GENERATOR", "OVERFLOW_NAMES", "PLAIN", "SPAN",
           "code_hash", "function_info"]
