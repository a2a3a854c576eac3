"""Function identity: a dense integer id per sensed function, and what that id stands for.

Identity is ``module.qualname`` (``shop.models.Cart.total``): it survives edits to the body and
moves within the file, so deployments can be compared. File, first line and a hash of the code are
recorded beside it. Ids index flat tables on the hot path, so they are small and never reused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import CodeType

from funcsight.codehash import code_hash

FUNCTION = "function"
SPAN = "span"


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
    """Append-only table of sensed functions; ``max_functions`` bounds it."""

    def __init__(self, max_functions: int = 20_000):
        self.max_functions = max_functions
        self.functions: list[FunctionInfo] = []
        self.dropped = 0
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.functions)

    def register(self, info: FunctionInfo) -> int:
        """The id of ``info`` (an existing one when the same name was registered), or -1 when the
        cap is reached."""
        key = (info.name, info.kind)
        with self._lock:
            fid = self._ids.get(key)
            if fid is not None:
                return fid
            if len(self.functions) >= self.max_functions:
                self.dropped += 1
                return -1
            fid = len(self.functions)
            self.functions.append(info)
            self._ids[key] = fid
            return fid

    def register_span(self, span_name: str) -> int:
        return self.register(FunctionInfo(name=span_name, kind=SPAN))

    def lookup(self, name: str, kind: str = FUNCTION) -> int | None:
        return self._ids.get((name, kind))

    def reset_after_fork(self) -> None:
        """In a forked child: a thread of the parent may have been registering a function at the
        fork, so the lock may have been copied held. The functions stay (ids are never reused)."""
        self._lock = threading.Lock()


__all__ = ["FunctionInfo", "FunctionRegistry", "FUNCTION", "SPAN", "code_hash", "function_info"]
