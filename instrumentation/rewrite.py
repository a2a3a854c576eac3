"""The Python 3.11 front end of the sensor: the application's modules rewritten at import time.

Python 3.11 has no ``sys.monitoring``. :class:`ImportRewriter` puts a finder first on
``sys.meta_path``; a plain source module that the selector senses is loaded by a loader that parses
it, wraps the body of every ``def``/``async def`` (nested functions, closures, methods, static and
class methods, functions decorated at definition time) and compiles it under the original file
name, so tracebacks, line numbers and ``inspect`` see the file as written. Rewritten code is never
written to ``__pycache__``. A function becomes::

    def f(x):
        "docstring (stays first)"
        __fs_t = __funcsight_enter__(7)       # 7: its function id
        try:
            <original body>                   # global/nonlocal stay where they were
        except BaseException as __fs_e:
            __funcsight_leave__(__fs_t, __fs_e)
            __fs_t = None
            raise                             # the original traceback, unchanged
        finally:
            if __fs_t is not None:
                __funcsight_leave__(__fs_t)

The hooks are bound by one statement after the module's docstring and ``__future__`` imports (so
``python -m pkg.mod``, which runs ``get_code()`` without ``exec_module``, works). Generators and
coroutines leave through ``__funcsight_unwind__``, which first puts back an invocation thrown into
while suspended (``throw()``, ``close()``, cancellation). Around each ``yield``, ``yield from`` and
``await`` of the function's own scope, and the implicit awaits of ``async for``, ``async with`` and
async comprehensions, the invocation leaves the thread's stack and comes back after: one call from
first entry to final exit, and asyncio tasks interleaving on a thread never see each other's
entries. A sensed coroutine run by the coroutine awaiting it (directly or through unsensed library
coroutines) credits that awaiter, as on 3.12, so the awaiter's self time excludes it.

Identity is ``module.co_qualname`` with the line, hash and kind of the *original* code: the module
is compiled once as written for that (which also reports syntax errors exactly as Python does), so
a funcsight upgrade never makes every function look changed. Functions are registered when their
module is imported (3.12: at their first call); past ``max_functions`` they are left as written.

Cost: importing a sensed module parses and compiles it twice, never from the cache (about 4x a
cache-less import). Per call, the core's enter and leave plus a few loads; per yield or await two
hook calls; per ``async for`` item and ``async with`` one small coroutine more.

Limits (none of them on 3.12):

* lambdas and generator expressions are not sensed (3.12 senses ``<lambda>`` and ``<genexpr>``);
* modules imported before :meth:`ImportRewriter.install` (the OpenTelemetry instrumentations
  import their framework first) and the script of ``python app.py`` (compiled by the interpreter)
  are rewritten after the fact: their functions get rewritten code objects (``__code__``), those
  of the script as soon as its last top-level ``def``/``class`` has run (a trace function on the
  script's module frame until then, installed when the interpreter starts the script). A function
  that cannot be given new code (no source, or its closure differs) is named in one warning line;
  a call already running when its code was replaced, and code made by ``exec``/``compile``, are
  not sensed;
* self time: during ``yield from`` the delegating generator is off the stack (a sensed delegate
  credits the consumer); an async generator's active time is credited to what is below it, not to
  the coroutine iterating it; after an exception is thrown into a suspended generator or
  coroutine, its handlers run off the stack until it exits (their callees credit the thrower);
* ``locals()`` shows ``__fs_t``; tracebacks through ``async for``/``async with`` show a funcsight
  frame; bytecode-reading JITs (numba) see the hook calls: exclude such modules.

About 700 lines on purpose: the AST transform, its loader and the after-the-fact rewriting of
already-imported code share the transform's details (hook names, the shape of a wrapped body) and
change together; split along those lines they would each need the others' internals.
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import itertools
import logging
import os
import sys
import threading
import warnings
from importlib.machinery import SourceFileLoader
from types import CodeType, CoroutineType, FunctionType, GeneratorType
from typing import Any, Callable, Iterator, NamedTuple

from funcsight.instrumentation._pysensor import COROUTINE, GENERATOR, PLAIN, PythonSensor, kind_of
from funcsight.instrumentation.registry import CO_ITERABLE_COROUTINE, FUNCTION, FunctionInfo, function_info
from funcsight.instrumentation.selection import MAIN_MODULE_NAMES, CodeSelector, main_module_name

_T, _E = "__fs_t", "__fs_e"  # the entry and the exception, locals of every rewritten function
_ENTER, _ENTER_CO = "__funcsight_enter__", "__funcsight_enter_co__"
_LEAVE, _UNWIND = "__funcsight_leave__", "__funcsight_unwind__"
_YIELD, _RESUME, _AWAIT = "__funcsight_yield__", "__funcsight_resume__", "__funcsight_await__"
_AITER, _ACM = "__funcsight_aiter__", "__funcsight_acm__"
_HOOK_NAMES = (_ENTER, _ENTER_CO, _LEAVE, _UNWIND, _YIELD, _RESUME, _AWAIT, _AITER, _ACM)
_HOOK_SETS: dict[int, tuple[Callable, ...]] = {}  # by rewriter token; kept: rewritten code stays
_tokens = itertools.count(1)
_warnings_lock = threading.Lock()  # catch_warnings() swaps process-wide state: one at a time
_log = logging.getLogger("funcsight")


def _hooks(token: int) -> tuple[Callable, ...]:
    """What the statement added to a rewritten module binds (in the order of ``_HOOK_NAMES``)."""
    return _HOOK_SETS[token]


# ------------------------------------------------------------------------------------------ hooks
def _special(obj: Any, name: str) -> Any:
    """``obj.name`` looked up on the type, as the interpreter does for ``async for``/``with``."""
    for klass in type(obj).__mro__:
        if name in klass.__dict__:
            attr = klass.__dict__[name]
            get = getattr(type(attr), "__get__", None)
            return attr if get is None else get(attr, obj, type(obj))
    return None


_NOT_AWAITABLE = {
    "__anext__": "'async for' received an invalid object from __anext__: ",
    "__aenter__": "'async with' received an object from __aenter__ that does not implement __await__: ",
    "__aexit__": "'async with' received an object from __aexit__ that does not implement __await__: ",
}


def _awaitable(obj: Any, method: str) -> Any:
    """``obj`` if it can be awaited, else the TypeError the interpreter raises there."""
    if type(obj) is CoroutineType or hasattr(type(obj), "__await__"):
        return obj
    if type(obj) is GeneratorType and obj.gi_code.co_flags & CO_ITERABLE_COROUTINE:
        return obj
    raise TypeError(_NOT_AWAITABLE[method] + type(obj).__name__)


async def _off_stack(entry: Any, awaitable: Any, await_: Callable, resume: Callable) -> Any:
    """Await ``awaitable`` with the invocation off the stack (an implicit await of ``async for``
    or ``async with``); back on it whatever happens, as the function goes on running."""
    await_(entry, awaitable)
    try:
        return await awaitable
    finally:
        resume(entry)


class _AsyncIter:
    """What ``async for`` iterates in a rewritten function: the real iterator, off the stack."""

    __slots__ = ("_next", "_entry", "_await", "_resume")

    def __init__(self, iterable: Any, entry: Any, await_: Callable, resume: Callable):
        aiter = _special(iterable, "__aiter__")
        if aiter is None:
            raise TypeError(f"'async for' requires an object with __aiter__ method, got {type(iterable).__name__}")
        iterator = aiter()
        self._next = _special(iterator, "__anext__")
        if self._next is None:
            raise TypeError("'async for' received an object from __aiter__ that does not implement __anext__: "
                            + type(iterator).__name__)
        self._entry, self._await, self._resume = entry, await_, resume

    def __aiter__(self) -> _AsyncIter:
        return self

    def __anext__(self) -> Any:
        return _off_stack(self._entry, _awaitable(self._next(), "__anext__"), self._await, self._resume)


class _AsyncContext:
    """What ``async with`` enters in a rewritten function: the real manager, off the stack."""

    __slots__ = ("_enter", "_exit", "_entry", "_await", "_resume")

    def __init__(self, manager: Any, entry: Any, await_: Callable, resume: Callable):
        self._enter, self._exit = _special(manager, "__aenter__"), _special(manager, "__aexit__")
        if self._enter is None or self._exit is None:
            missed = " (missed __aexit__ method)" if self._enter is not None else ""
            raise TypeError(f"'{type(manager).__name__}' object does not support the asynchronous context "
                            f"manager protocol{missed}")
        self._entry, self._await, self._resume = entry, await_, resume

    def __aenter__(self) -> Any:
        return _off_stack(self._entry, _awaitable(self._enter(), "__aenter__"), self._await, self._resume)

    def __aexit__(self, *exc_info: Any) -> Any:
        return _off_stack(self._entry, _awaitable(self._exit(*exc_info), "__aexit__"), self._await, self._resume)


def _make_hooks(core: PythonSensor) -> tuple[Callable, ...]:
    """The hooks of one core. A coroutine entry may carry an 8th item: the entry of the coroutine
    that awaits it, credited (instead of what is below on the stack) when it suspends or ends; its
    path node (7th item) is then under the awaiter's."""
    enter, leave, suspend, resume = core.enter, core.leave, core.suspend, core.resume
    tls = core._tls
    pending = threading.local()  # .value: (coroutine being awaited, entry of its awaiter) or None

    def stack_of() -> list:
        try:
            return tls.stack
        except AttributeError:
            tls.stack = stack = []
            return stack

    def via_awaiter(op: Callable, entry: list, *args: Any) -> None:
        """Run ``op`` (it credits ``stack[-1]`` once ``entry`` is off) with the awaiter there."""
        stack = stack_of()
        if not stack or stack[-1] is not entry:
            return op(entry, *args)
        awaiter = entry[7]
        stack[-1] = awaiter
        stack.append(entry)
        try:
            op(entry, *args)
        finally:
            if stack and stack[-1] is awaiter:
                stack.pop()

    def enter_co(fid: int) -> list:
        entry = enter(fid)
        awaited = getattr(pending, "value", None)
        if awaited is not None and awaited[0].cr_running:  # we run inside what our awaiter awaits
            awaiter = awaited[1]
            entry[6] = core.paths.child(awaiter[6], fid)
            entry.append(awaiter)
        return entry

    def unwind(entry: list, exc: BaseException | None = None) -> None:
        try:
            stack = stack_of()
            if (not stack or stack[-1] is not entry) and not any(e is entry for e in stack):
                resume(entry)  # thrown into while suspended: back on the stack to leave
            if len(entry) > 7:
                via_awaiter(leave, entry, exc)
            else:
                leave(entry, exc)
        except Exception:
            core.internal_errors += 1

    def yield_(entry: list, value: Any) -> Any:
        suspend(entry)
        return value

    def await_(entry: list, awaitable: Any) -> Any:
        try:
            if len(entry) > 7:
                via_awaiter(suspend, entry)
            else:
                suspend(entry)
            pending.value = (awaitable, entry) if type(awaitable) is CoroutineType else None
        except Exception:
            core.internal_errors += 1
        return awaitable

    def aiter_(entry: list, iterable: Any) -> _AsyncIter:
        return _AsyncIter(iterable, entry, await_, resume)

    def acm(entry: list, manager: Any) -> _AsyncContext:
        return _AsyncContext(manager, entry, await_, resume)

    return enter, enter_co, leave, unwind, yield_, resume, await_, aiter_, acm


# ------------------------------------------------------------------------------------- transform
class _Plan(NamedTuple):
    fid: int
    kind: int
    is_async: bool


def _name(name: str, store: bool = False) -> ast.Name:
    return ast.Name(name, ast.Store() if store else ast.Load())


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _at(node: ast.AST, ref: ast.AST) -> ast.AST:
    return ast.copy_location(node, ref)


def _locate(node: ast.AST, ref: ast.AST) -> ast.AST:
    """Give ``ref``'s position to a new subtree (one without user nodes yet)."""
    for child in ast.walk(node):
        if "lineno" in child._attributes:
            child.lineno, child.col_offset = ref.lineno, ref.col_offset
            child.end_lineno, child.end_col_offset = ref.lineno, ref.col_offset
    return node


_BLOCKS = ("body", "orelse", "handlers", "finalbody", "cases")  # fields that hold statements


class _Transformer(ast.NodeTransformer):
    """Registers and wraps every ``def``; rewrites the yields and awaits of each sensed generator or
    async function's own scope. Elsewhere only statements are walked (expressions hold no ``def``),
    which keeps the walk cheap."""

    def __init__(self, register: Callable[[ast.AST, str], _Plan | None]):
        self.register = register
        self.scope: _Plan | None = None  # the sensed function whose own code is being visited
        self.prefix = ""  # qualname prefix, for names when no code object matches
        self.wrapped = 0

    def generic_visit(self, node: ast.AST) -> ast.AST:
        scope = self.scope
        if scope is not None and (scope.is_async or scope.kind == GENERATOR):
            return super().generic_visit(node)
        for field in _BLOCKS:
            block = getattr(node, field, None)
            if type(block) is list:
                setattr(node, field, [self.visit(child) for child in block])
        return node

    def _under(self, scope: _Plan | None, prefix: str, nodes: list) -> list:
        saved = self.scope, self.prefix
        self.scope, self.prefix = scope, prefix
        try:
            return [self.visit(node) for node in nodes]
        finally:
            self.scope, self.prefix = saved

    def _call(self, hook: str, arg: ast.expr, ref: ast.AST) -> ast.Call:
        return _at(ast.Call(_at(_name(hook), ref), [_at(_name(_T), ref), arg], []), ref)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.args = self.visit(node.args)
        if node.returns is not None:
            node.returns = self.visit(node.returns)
        qualname = self.prefix + node.name
        plan = self.register(node, qualname)
        node.body = self._under(plan, qualname + ".<locals>.", node.body)
        if plan is not None:
            node.body = self._wrap(node.body, plan, node)
            self.wrapped += 1
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        node.args = self.visit(node.args)
        node.body = self._under(None, self.prefix, [node.body])[0]
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.bases = [self.visit(b) for b in node.bases]
        node.keywords = [self.visit(k) for k in node.keywords]
        node.body = self._under(None, f"{self.prefix}{node.name}.", node.body)
        return node

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> ast.AST:
        # Only the first iterable is evaluated by the enclosing function; the rest runs lazily.
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        saved, self.scope = self.scope, None
        try:
            first.target = self.visit(first.target)
            first.ifs = [self.visit(i) for i in first.ifs]
            node.generators[1:] = [self.visit(g) for g in node.generators[1:]]
            node.elt = self.visit(node.elt)
        finally:
            self.scope = saved
        return node

    def visit_Yield(self, node: ast.Yield | ast.YieldFrom) -> ast.AST:
        self.generic_visit(node)
        if self.scope is None or self.scope.kind != GENERATOR:
            return node
        node.value = self._call(_YIELD, node.value or _at(ast.Constant(None), node), node)
        return self._call(_RESUME, node, node)

    visit_YieldFrom = visit_Yield

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.generic_visit(node)
        if self.scope is None or not self.scope.is_async:
            return node
        node.value = self._call(_AWAIT, node.value, node)
        return self._call(_RESUME, node, node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        if self.scope is not None and self.scope.is_async:
            node.iter = self._call(_AITER, node.iter, node.iter)
        return node

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        if node.is_async and self.scope is not None and self.scope.is_async:
            node.iter = self._call(_AITER, node.iter, node.iter)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        if self.scope is not None and self.scope.is_async:
            for item in node.items:
                item.context_expr = self._call(_ACM, item.context_expr, item.context_expr)
        return node

    @staticmethod
    def _wrap(body: list[ast.stmt], plan: _Plan, node: ast.AST) -> list[ast.stmt]:
        head = [body.pop(0)] if body and _is_docstring(body[0]) else []
        ref = body[0] if body else node
        enter = _ENTER_CO if plan.kind == COROUTINE else _ENTER
        leave = _LEAVE if plan.kind == PLAIN else _UNWIND
        start = ast.Assign([_name(_T, True)], ast.Call(_name(enter), [ast.Constant(plan.fid)], []))
        on_error = [ast.Expr(ast.Call(_name(leave), [_name(_T), _name(_E)], [])),
                    ast.Assign([_name(_T, True)], ast.Constant(None)), ast.Raise()]
        on_exit = ast.If(ast.Compare(_name(_T), [ast.IsNot()], [ast.Constant(None)]),
                         [ast.Expr(ast.Call(_name(leave), [_name(_T)], []))], [])
        try_ = ast.Try([ast.Pass()], [ast.ExceptHandler(_name("BaseException"), _E, on_error)], [], [on_exit])
        _locate(start, ref)
        _locate(try_, ref)  # before the user's statements go in
        try_.body = body or try_.body
        return head + [start, try_]


def _own_nodes(nodes: list[ast.AST]) -> Iterator[ast.AST]:
    """``nodes`` and what is below them in their scope (not in nested functions, classes, lambdas)."""
    for node in nodes:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            yield from _own_nodes(list(ast.iter_child_nodes(node)))


def _codes(code: CodeType) -> Iterator[CodeType]:
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield const
            yield from _codes(const)


# ---------------------------------------------------------------------------------- import hooks
class _RewritingLoader(SourceFileLoader):
    """A source loader whose code is rewritten; nothing it compiles goes to ``__pycache__``."""

    def __init__(self, fullname: str, path: str, rewriter: ImportRewriter):
        super().__init__(fullname, path)
        self._rewriter = rewriter

    def get_code(self, fullname: str | None = None) -> CodeType | None:
        try:
            source = self.get_data(self.path)
        except OSError:
            return super().get_code(fullname)
        code = self._rewriter.compile_source(source, self.path, fullname or self.name)
        return code if code is not None else super().get_code(fullname)  # raises the SyntaxError


class _Finder:
    """First on ``sys.meta_path``: asks the other finders, in their order, who has a module; takes
    over only the plain source modules the selector senses (their loader becomes ours)."""

    def __init__(self, rewriter: ImportRewriter):
        self._rewriter = rewriter

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.partition(".")[0] == "funcsight":
            return None
        try:
            for finder in list(sys.meta_path):
                find = getattr(finder, "find_spec", None)
                if find is not None and not isinstance(finder, _Finder):
                    spec = find(fullname, path, target)
                    if spec is not None:
                        break
            else:
                return None
            if type(spec.loader) is not SourceFileLoader or not spec.origin:
                return None
            if not self._rewriter.selector.module_is_sensed(fullname, spec.origin):
                return None
        except Exception:  # the import system will ask the same finders and report it
            return None
        spec.loader = _RewritingLoader(fullname, spec.origin, self._rewriter)
        return spec

    def invalidate_caches(self) -> None:
        pass


class ImportRewriter:
    """Rewrites the sensed modules imported while installed (see the module docstring)."""

    def __init__(self, core: PythonSensor, selector: CodeSelector):
        self.core = core
        self.selector = selector
        self.token = next(_tokens)
        own = getattr(core, "rewrite_hooks", None)  # a C core brings the same hooks in C
        _HOOK_SETS[self.token] = own() if own is not None else _make_hooks(core)
        self._finder = _Finder(self)
        self._retrofitted = False
        self.retrofitted: dict[str, int] = {}  # module -> functions given rewritten code after import
        self.missed: dict[str, int] = {}  # module -> functions that could not be

    def install(self) -> None:
        if not any(finder is self._finder for finder in sys.meta_path):
            sys.meta_path.insert(0, self._finder)
        if not self._retrofitted:
            self._retrofitted = True
            try:
                self._retrofit_loaded()
            except Exception:  # a bug here must not stop the application
                self.core.internal_errors += 1
                _log.exception("funcsight: sensing modules imported before funcsight started failed")

    def uninstall(self) -> None:
        """Later imports are not rewritten; modules already rewritten stay so (and keep counting)."""
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self._finder]

    def compile_source(self, source: bytes | str, path: str, module: str) -> CodeType | None:
        """The code of a module with its functions sensed; None when the source does not compile
        (let Python report it). If the rewrite itself fails (counted in ``internal_errors``), the
        module runs as written."""
        if module in MAIN_MODULE_NAMES:
            module = main_module_name()
        try:
            tree = ast.parse(source, path)
            original = compile(tree, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return None
        try:
            codes = {(code.co_name, code.co_firstlineno): code for code in _codes(original)}
            transformer = _Transformer(functools.partial(self._register, codes, path, module))
            transformer.visit(tree)
            if not transformer.wrapped:
                return original
            body = tree.body
            at = 1 if body and _is_docstring(body[0]) else 0
            while at < len(body) and isinstance(body[at], ast.ImportFrom) and body[at].module == "__future__":
                at += 1
            bind = f"{', '.join(_HOOK_NAMES)} = __import__({__name__!r}, None, None, ('_hooks',))._hooks({self.token})"
            body.insert(at, _locate(ast.parse(bind).body[0], body[min(at, len(body) - 1)]))
            with _warnings_lock, warnings.catch_warnings():  # the first compile reported them
                warnings.simplefilter("ignore", SyntaxWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return compile(tree, path, "exec", dont_inherit=True)
        except Exception:  # a bug here must not stop the application
            self.core.internal_errors += 1
            return original

    def _register(self, codes: dict, path: str, module: str, node: ast.AST, qualname: str) -> _Plan | None:
        """Register a function, its identity taken from its original code; None past the cap."""
        line = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        code = codes.get((node.name, line))
        if code is not None:
            info, kind = function_info(code, module), kind_of(code)
        else:  # not expected: both come from one tree
            yields = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(node.body))
            is_async = isinstance(node, ast.AsyncFunctionDef)
            kind = GENERATOR if yields else COROUTINE if is_async else PLAIN
            digest = hashlib.sha1(ast.unparse(node).encode()).hexdigest()[:16]
            info = FunctionInfo(f"{module}.{qualname}", FUNCTION, path, line, digest, kind != PLAIN)
        fid = self.core.adopt_info(info, kind)
        return _Plan(fid, kind, isinstance(node, ast.AsyncFunctionDef)) if fid >= 0 else None

    # ------------------------------------------------ code that was loaded before install()
    def _retrofit_loaded(self) -> None:
        """Rewrite the sensed modules imported before now, and the main script: now if it has run
        (or is running: funcsight started from it), else once the interpreter starts it."""
        by_file: dict[str, tuple[str, dict]] = {}
        main = sys.modules.get("__main__")
        for name, module in list(sys.modules.items()):
            if name.partition(".")[0] == "funcsight" or module is None or name in MAIN_MODULE_NAMES:
                continue
            path = getattr(module, "__file__", None)
            namespace = getattr(module, "__dict__", None)
            if not path or not isinstance(namespace, dict) or _ENTER in namespace:
                continue
            try:
                if self.selector.module_is_sensed(name, path):
                    by_file[path] = (name, namespace)
            except Exception:
                continue
        main_file = getattr(main, "__file__", None)
        if main_file and isinstance(getattr(main, "__dict__", None), dict) and _ENTER not in main.__dict__:
            if self.selector.module_is_sensed(main_module_name(), main_file):
                by_file[main_file] = ("__main__", main.__dict__)
                self._watch_running_main(main_file, main.__dict__)
        elif not main_file:
            self._watch_main_script()
        if by_file:
            self._retrofit(by_file)
            self._report_missed()

    def _retrofit(self, by_file: dict[str, tuple[str, dict]]) -> None:
        """Give the functions of these files (``path -> (module, its globals)``) their rewritten
        code: one pass over the live functions, matched by qualified name and first line."""
        replacements: dict[str, dict] = {}
        for path, (module, namespace) in by_file.items():
            code = None
            if path.endswith(".py"):
                try:
                    with open(path, "rb") as handle:
                        code = self.compile_source(handle.read(), path, module)
                except OSError:
                    code = None
            if code is None:
                self.missed[_shown(module)] = self.missed.get(_shown(module), 0) + 1
                continue
            new = {(c.co_qualname, c.co_firstlineno): c for c in _codes(code) if _ENTER in c.co_names or _ENTER_CO in c.co_names}
            if not new:
                continue
            namespace.update(zip(_HOOK_NAMES, _hooks(self.token)))
            replacements[path] = new
        if not replacements:
            return
        for obj in gc.get_objects():
            if type(obj) is not FunctionType:
                continue
            old = obj.__code__
            new_codes = replacements.get(old.co_filename)
            if new_codes is None:
                continue
            new = new_codes.get((old.co_qualname, old.co_firstlineno))
            if new is None or new is old:
                continue
            module = _shown(by_file[old.co_filename][0])
            if new.co_freevars != old.co_freevars or obj.__globals__ is not by_file[old.co_filename][1]:
                self.missed[module] = self.missed.get(module, 0) + 1
                continue
            try:
                obj.__code__ = new
            except (ValueError, TypeError):
                self.missed[module] = self.missed.get(module, 0) + 1
                continue
            self.retrofitted[module] = self.retrofitted.get(module, 0) + 1

    def _report_missed(self) -> None:
        if self.missed:
            listed = ", ".join(f"{name} ({count})" for name, count in sorted(self.missed.items()))
            _log.warning("funcsight: on Python 3.11 these functions, loaded before funcsight started, are not sensed "
                         "(no source, or their closure differs from the source): %s", listed)
            self.missed = {}

    def _watch_main_script(self) -> None:
        """``python app.py`` under a launcher: funcsight starts (from sitecustomize) before the
        interpreter compiles the script. When it starts it ("cpython.run_file"), trace its module
        frame, line by line, until its last top-level definition has run; then rewrite."""
        argv0 = sys.argv[0] if sys.argv else ""
        if not argv0.endswith(".py") or not os.path.isfile(argv0):
            return
        target = os.path.realpath(argv0)
        if not self.selector.module_is_sensed(main_module_name(), target):
            return
        armed = [True]

        def on_audit(event: str, args: tuple) -> None:
            if event != "cpython.run_file" or not armed[0]:
                return
            armed[0] = False
            if not any(finder is self._finder for finder in sys.meta_path):
                return  # stopped meanwhile
            try:
                if os.path.realpath(os.fsdecode(args[0])) != target:
                    return
                last = _last_definition_line(target)
                if last is None:
                    return

                def on_call(frame, event, arg):
                    code = frame.f_code
                    if code.co_name == "<module>" and os.path.realpath(code.co_filename) == target:
                        sys.settrace(_quiet)  # calls below the script's top level are not traced
                        return self._main_tracer(code.co_filename, frame.f_globals, last)
                    return None

                sys.settrace(on_call)
            except Exception:
                self.core.internal_errors += 1

        sys.addaudithook(on_audit)

    def _watch_running_main(self, path: str, namespace: dict) -> None:
        """funcsight started from the script itself: what the script defines later is rewritten
        once its last top-level definition has run."""
        frame = sys._getframe()
        while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is namespace):
            frame = frame.f_back
        last = _last_definition_line(path)
        if frame is None or last is None or frame.f_lineno >= last:
            return
        frame.f_trace = self._main_tracer(path, namespace, last)
        sys.settrace(_quiet)

    def _main_tracer(self, path: str, namespace: dict, last_line: int) -> Callable:
        def on_line(frame, event, arg):
            if event != "return" and (event != "line" or frame.f_lineno <= last_line):
                return on_line
            sys.settrace(None)
            frame.f_trace = None
            try:
                self._retrofit({path: ("__main__", namespace)})
                self._report_missed()
            except Exception:
                self.core.internal_errors += 1
                _log.exception("funcsight: sensing the main script failed")
            return None

        return on_line


def _quiet(frame, event, arg) -> None:
    """A trace function that traces nothing (set while one frame is traced line by line)."""
    return None


def _shown(module: str) -> str:
    return main_module_name() if module in MAIN_MODULE_NAMES else module


def _last_definition_line(path: str) -> int | None:
    """The last line of the last ``def``/``class`` the module's own code runs (not those nested
    in functions: they come from their function's code); None when it has none."""
    try:
        with open(path, "rb") as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    last = None
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            last = max(last or 0, node.end_lineno or node.lineno)
            continue
        if isinstance(node, ast.stmt):
            for field in _BLOCKS:
                block = getattr(node, field, None)
                if type(block) is list:
                    pending.extend(block)
        elif isinstance(node, (ast.ExceptHandler, ast.match_case)):
            pending.extend(node.body)
    return last
