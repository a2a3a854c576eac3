"""Which code is the application's own: the rule that decides what the sensor senses.

By default a function is sensed when its file lives below the application's directory and not in
the standard library, site-packages or funcsight itself. ``FUNCSIGHT_INCLUDE`` replaces the
directory rule with module patterns (``shop.*``, or ``shop``: the package and its submodules); a
pattern written ``+wagtail`` is sensed in addition to the directory rule instead.
``FUNCSIGHT_EXCLUDE`` removes modules. The decision is made once per code object (the sensor
remembers it), so its cost does not matter on the hot path.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import site
import sys
import sysconfig
from types import CodeType, FunctionType

from funcsight.config import Config

CO_OPTIMIZED = 0x0001
# Comprehensions are expressions of their function, not functions a user wrote; 3.12 inlines
# them (PEP 709) and 3.11 does not, so sensing them would make the two versions disagree.
_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>"})
_FUNCSIGHT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the installed package
# The folders funcsight's own packages live in. Installed (wheel), they are all below _FUNCSIGHT_DIR;
# in an editable install each is a top-level folder of the checkout (package-dir in pyproject.toml),
# and _FUNCSIGHT_DIR is the whole checkout, which must not hide an app that lives in it too.
_OWN_PACKAGES = ("funcsight", "instrumentation", "processors", "exporters", "store", "analysis", "sources",
                 "cli", "demo", "mcp_server", "report", "agent")


def funcsight_dirs() -> tuple[str, ...]:
    """Each folder (with a trailing separator) holding a package of funcsight itself."""
    dirs = set()
    for name, module in list(sys.modules.items()):
        if name == "funcsight" or name.startswith("funcsight."):
            for path in getattr(module, "__path__", None) or ():
                dirs.add(path)
    for name in _OWN_PACKAGES:
        spec = None
        try:
            spec = importlib.util.find_spec(name if name == "funcsight" else "funcsight." + name)
        except (ImportError, ValueError):
            pass
        for path in (spec.submodule_search_locations or ()) if spec is not None else ():
            dirs.add(path)
    return tuple(sorted(os.path.join(os.path.realpath(d), "") for d in dirs))


def default_app_dir() -> str:
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else None
    for candidate in (main_file, argv0):
        if candidate and candidate.endswith(".py") and os.path.isfile(candidate):
            return os.path.dirname(os.path.abspath(candidate))
    return os.getcwd()


def _library_dirs() -> tuple[str, ...]:
    dirs = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(path)
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        dirs.add(prefix)
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # virtualenv's legacy site module
        pass
    dirs.update(funcsight_dirs())
    return tuple(sorted(os.path.join(os.path.realpath(d), "") for d in dirs if d))


def _matches(module: str, globs: tuple[str, ...]) -> bool:
    """A glob matches module names (``shop.*``); a plain name (``shop``) matches that module and,
    when it is a package, all its submodules."""
    for pattern in globs:
        if any(char in pattern for char in "*?["):
            if fnmatch.fnmatchcase(module, pattern):
                return True
        elif module == pattern or module.startswith(pattern + "."):
            return True
    return False


def split_include(include: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``FUNCSIGHT_INCLUDE`` entries as (patterns replacing the directory rule, patterns added to
    it): ``+wagtail`` adds, ``wagtail`` replaces. With only added patterns the directory rule stays."""
    replacing = tuple(p for p in include if not p.startswith("+"))
    added = tuple(p[1:].strip() for p in include if p.startswith("+") and p[1:].strip())
    return replacing, added


class CodeSelector:
    """Decides, for a code object and the module it runs in, whether it is sensed."""

    def __init__(self, config: Config):
        self.include, self.added = split_include(config.include)
        self.exclude = config.exclude
        self.app_dir = os.path.join(os.path.realpath(config.app_dir or default_app_dir()), "")
        self.own_dirs = funcsight_dirs()
        self.library_dirs = tuple(d for d in _library_dirs() if not self.app_dir.startswith(d) or d in self.own_dirs)
        self._file_verdicts: dict[str, bool] = {}
        self._real_dirs: dict[str, str] = {}  # directory as named -> its real path
        # module -> file -> verdict of module_is_sensed: nested, so a look-up makes no key string
        # (the sensors read it first: most code objects a process makes are of modules decided).
        self.verdicts: dict[str, dict[str, bool]] = {}

    def is_function(self, code: CodeType) -> bool:
        return bool(code.co_flags & CO_OPTIMIZED) and code.co_name not in _COMPREHENSIONS and not forwards_to_itself(code)

    def file_is_app(self, filename: str) -> bool:
        verdict = self._file_verdicts.get(filename)
        if verdict is None:
            path = self._realpath(filename) if filename and not filename.startswith("<") else ""
            verdict = bool(path) and self._path_is_app(path)
            self._file_verdicts[filename] = verdict
        return verdict

    def _realpath(self, filename: str) -> str:
        """``os.path.realpath(filename)``, its directory resolved once for all its files: resolving
        costs a system call per path component, and a process starts with a thousand files in a
        few dozen directories. The file itself may still be a link (one ``lstat``)."""
        head, tail = os.path.split(filename)
        if not os.path.isabs(head) or tail in ("", ".", ".."):
            return os.path.realpath(filename)
        real_dir = self._real_dirs.get(head)
        if real_dir is None:
            real_dir = self._real_dirs[head] = os.path.realpath(head)
        path = os.path.join(real_dir, tail)
        return os.path.realpath(path) if os.path.islink(path) else path

    def _path_is_app(self, path: str) -> bool:
        if path.startswith(self.own_dirs):
            return False
        if os.sep + "site-packages" + os.sep in path or os.sep + "dist-packages" + os.sep in path:
            return False
        if path.startswith(self.library_dirs):
            return False
        return path.startswith(self.app_dir)

    def module_is_sensed(self, module: str, filename: str) -> bool:
        """The rule for a module (name as imported) whose code lives in ``filename``."""
        by_file = self.verdicts.get(module)
        if by_file is None:
            by_file = self.verdicts[module] = {}
        verdict = by_file.get(filename)
        if verdict is None:
            if module == "funcsight" or module.startswith("funcsight."):
                by_file[filename] = False
                return False
            if self.include:
                verdict = _matches(module, self.include + self.added)
            else:
                verdict = (self.file_is_app(filename) or self._runtime_code_of_app(module, filename)
                           or bool(self.added) and _matches(module, self.added))
            if verdict and self.exclude and _matches(module, self.exclude):
                verdict = False
            by_file[filename] = verdict
        return verdict

    @property
    def uses_app_dir(self) -> bool:
        """Whether the directory rule applies (no FUNCSIGHT_INCLUDE pattern replaces it)."""
        return not self.include

    def package_patterns(self) -> tuple[str, ...]:
        """The module patterns sensed besides (or instead of) the directory rule."""
        return self.include + self.added

    def describe(self) -> str:
        """What is sensed, in words, for the start-up line."""
        parts = []
        if self.uses_app_dir:
            parts.append(f"functions of modules below {self.app_dir.rstrip(os.sep) or os.sep}")
        if self.package_patterns():
            parts.append("modules " + ", ".join(self.package_patterns()))
        text = " and ".join(parts)
        if self.exclude:
            text += " except " + ", ".join(self.exclude)
        return text

    def _runtime_code_of_app(self, module: str, filename: str) -> bool:
        # Code made by exec()/compile() has a pseudo file name ("<string>"); it belongs to the app
        # when the module whose globals it runs in does.
        if not filename.startswith("<"):
            return False
        owner = sys.modules.get(module)
        owner_file = getattr(owner, "__file__", None)
        return bool(owner_file) and self.file_is_app(owner_file)


def forwards_to_itself(code: CodeType) -> bool:
    """Whether ``code`` is a stub another tool put in place of a function's code, which only hands
    the call on to a copy of that same function.

    ddtrace's bytecode wrapping (``ddtrace.internal.wrapping.wrap``; its Code Origin for Spans puts
    one on every Flask, Django and Starlette view until the view's first call) gives the stub the
    function's own name, qualified name and file, and keeps the wrapper and the copy among its
    constants. A call through it runs the stub and then the real body, which would count one call
    as two. A compiler never puts a function object among a code object's constants, so this
    cannot match code someone wrote; the real body is still sensed, with its callees under it."""
    for const in code.co_consts:
        if type(const) is FunctionType:  # exactly: a subclass could run code on attribute access
            inner = const.__code__
            if inner.co_qualname == code.co_qualname and inner.co_filename == code.co_filename:
                return True
    return False


# multiprocessing's spawn imports the parent's script under the second name in its children.
MAIN_MODULE_NAMES = frozenset({"__main__", "__mp_main__"})


def main_module_name() -> str:
    """The name ``__main__`` stands for, so a script's functions keep one identity whether it is
    run as a script, with ``-m``, or imported by a server."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    main_file = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv else "")
    stem = os.path.splitext(os.path.basename(main_file or ""))[0]
    return stem or "__main__"
