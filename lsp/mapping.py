"""From an open file to the sensed functions it defines.

The store records each function by identity (``module.qualname``), with the file, first line and
code hash it had when it ran (per version). The open file is re-parsed (``ast``) on every change, so
a function is found by its qualified name wherever it is now, not at the line it was recorded at;
its current code is compiled and hashed the way the sensor hashes it, so a function edited since
the recording is told apart from one that only moved. A function whose name is not recorded but
whose code hash is (renamed, same body) is matched by the hash.

The module of the open file is not known from its path alone (a deployed app runs from another
directory than the checkout): every dotted suffix of the path is tried as the module name and the
one that names the most recorded functions wins, an exact recorded path breaking ties.

Pure Python over plain records: no pygls, no store.
"""

from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass, field
from types import CodeType

from funcsight.codehash import code_hash


@dataclass(frozen=True)
class Recorded:
    """One function as the store recorded it in one version."""

    function: str
    version: str
    file: str
    line: int  # co_firstlineno: the first decorator's line when decorated
    code_hash: str


@dataclass
class Definition:
    """A ``def`` in the open file as it is now."""

    qualname: str
    line: int  # 0-based line of the ``def`` keyword
    name_start: int  # UTF-16 columns of the name on that line (LSP positions)
    name_end: int
    first_line: int  # 1-based, first decorator included: comparable with the recorded line
    last_line: int  # 0-based, last line of the body
    header_last_line: int  # 0-based, line of the colon ending the signature (hover range)
    code_hash: str | None = None  # None when the file does not compile as it is


@dataclass
class Match:
    definition: Definition
    function: str  # the recorded name
    recorded: Recorded  # the location in the shown version (or the latest version that has one)
    moved: bool  # recorded at another line
    edited: bool  # the code hash differs from the recorded one
    renamed_from: str | None = None  # matched by code hash, not by name


@dataclass
class FileMap:
    """What of the open file the store knows about."""

    module: str | None
    matches: list[Match] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # recorded in this module, not defined in the file now
    syntax_error: str | None = None

    @property
    def edited(self) -> list[Match]:
        return [m for m in self.matches if m.edited]

    @property
    def changed_since_recording(self) -> bool:
        return bool(self.edited or self.missing)

    def at(self, line: int) -> Match | None:
        """The innermost sensed function whose header (decorators to colon) holds ``line`` (0-based)."""
        best = None
        for m in self.matches:
            d = m.definition
            if d.first_line - 1 <= line <= d.header_last_line and (best is None or d.line > best.definition.line):
                best = m
        return best


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def definitions(text: str, path: str = "<editor>") -> tuple[list[Definition], str | None]:
    """Every function definition in ``text`` with its qualified name, and the syntax error (one line)
    when the file does not parse."""
    try:
        tree = ast.parse(text, filename=path)
    except (SyntaxError, ValueError) as err:
        return [], f"{type(err).__name__}: {err}"
    lines = text.splitlines()
    found: list[Definition] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + child.name
                found.append(_definition(child, qualname, lines))
                visit(child, qualname + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            elif not isinstance(child, ast.Lambda):
                visit(child, prefix)  # if/try/with blocks at any level keep the enclosing prefix

    visit(tree, "")
    hashes = _hashes(text, path)
    for d in found:
        d.code_hash = hashes.get((d.qualname, d.first_line)) if hashes is not None else None
    return found, None


def _definition(node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, lines: list[str]) -> Definition:
    line = node.lineno - 1
    source = lines[line] if line < len(lines) else ""
    # col_offset counts UTF-8 bytes; LSP columns count UTF-16 units.
    prefix = source.encode("utf-8")[: node.col_offset].decode("utf-8", "replace")
    at = source.find(node.name, len(prefix))
    if at < 0:
        at = len(prefix)
    start = _utf16(source[:at])
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body_start = node.body[0].lineno - 1 if node.body else line
    header_last = line
    for index in range(line, min(body_start + 1, len(lines))):
        header_last = index
        if lines[index].rstrip().endswith(":"):
            break
    return Definition(qualname, line, start, start + _utf16(node.name), first, (node.end_lineno or node.lineno) - 1,
                      max(line, min(header_last, body_start)))


def _hashes(text: str, path: str) -> dict[tuple[str, int], str] | None:
    """``(qualname, first line) -> code hash`` of every function in ``text`` compiled as an import
    would compile it; None when it does not compile."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = compile(text, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return None
    out: dict[tuple[str, int], str] = {}
    stack = [module]
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            if isinstance(const, CodeType):
                stack.append(const)
                out.setdefault((const.co_qualname, const.co_firstlineno), code_hash(const))
    return out


def module_candidates(path: str) -> list[str]:
    """Dotted module names ``path`` could be imported as, shortest first: ``/a/src/shop/db.py`` ->
    ``db``, ``shop.db``, ``src.shop.db``, ``a.src.shop.db``; a package's ``__init__.py`` is its
    package."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    parts = [p for p in parts if p]
    if not parts:
        return []
    stem = os.path.splitext(parts[-1])[0]
    parts = parts[:-1] if stem == "__init__" else parts[:-1] + [stem]
    out = []
    for size in range(1, len(parts) + 1):
        chunk = parts[-size:]
        if not all(p.isidentifier() for p in chunk):
            break
        out.append(".".join(chunk))
    return out


def map_file(text: str, path: str, recorded: dict[str, Recorded], by_module: dict[str, list[str]] | None = None) -> FileMap:
    """Match the definitions in ``text`` (the file at ``path``, possibly unsaved) against
    ``recorded`` (``function -> Recorded`` in the version shown). ``by_module`` (``module ->
    functions``) speeds the lookup of what a module should define; it is built when not given."""
    defs, error = definitions(text, path)
    if error is not None:
        return FileMap(module=None, syntax_error=error)
    here = os.path.realpath(path)
    best: tuple[tuple[int, int], str] | None = None
    for module in module_candidates(path):
        named = [d for d in defs if f"{module}.{d.qualname}" in recorded]
        if not named:
            continue
        exact = sum(1 for d in named if os.path.realpath(recorded[f"{module}.{d.qualname}"].file) == here)
        score = (len(named), exact)
        if best is None or score > best[0]:
            best = (score, module)
    if best is None:
        return FileMap(module=None)
    module = best[1]
    result = FileMap(module=module)
    matched: set[str] = set()
    unmatched: list[Definition] = []
    for d in defs:
        name = f"{module}.{d.qualname}"
        rec = recorded.get(name)
        if rec is None:
            unmatched.append(d)
            continue
        matched.add(name)
        result.matches.append(Match(d, name, rec, moved=rec.line != d.first_line,
                                    edited=d.code_hash is not None and d.code_hash != rec.code_hash))
    in_module = by_module.get(module, []) if by_module is not None else [n for n in recorded if module_of(n, recorded[n]) == module]
    leftover = {recorded[n].code_hash: n for n in in_module if n not in matched and "<lambda>" not in n and "<genexpr>" not in n
                and "<listcomp>" not in n and "<dictcomp>" not in n and "<setcomp>" not in n}
    for d in unmatched:
        name = leftover.pop(d.code_hash, None) if d.code_hash else None
        if name is not None:
            matched.add(name)
            result.matches.append(Match(d, name, recorded[name], moved=recorded[name].line != d.first_line, edited=False,
                                        renamed_from=name))
    result.missing = sorted(n for n in leftover.values() if n not in matched)
    result.matches.sort(key=lambda m: m.definition.line)
    return result


def module_of(function: str, rec: Recorded) -> str | None:
    """The module part of a recorded ``module.qualname``, told by its file: ``shop/db.py`` holds
    ``shop.db.*``. None when the file's path does not name the function's module."""
    for module in reversed(module_candidates(rec.file)):
        if function.startswith(module + "."):
            return module
    return None


__all__ = ["Definition", "FileMap", "Match", "Recorded", "code_hash", "definitions", "map_file", "module_candidates", "module_of"]
