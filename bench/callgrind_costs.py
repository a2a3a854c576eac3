"""Read a callgrind output file into self and call-edge costs per function name.

``callgrind_annotate`` prints one line per (source file, function): a C function whose inlined
parts come from several headers shows up several times, and recursion is split into ``'2``
copies. Attributing funcsight's extra instructions needs one figure per function and per
caller -> callee edge, so this module parses the file itself (the documented format:
https://valgrind.org/docs/manual/cl-format.html, with name compression, one event).

Used by ``where.py``; no dependency beyond the standard library.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

_RECURSION = re.compile(r"'\d+$")
_DEFINITION = re.compile(r"\((\d+)\)(?: (.*))?$")


@dataclass
class Profile:
    total: int = 0
    self_cost: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (caller, callee) -> (inclusive cost of those calls, number of calls)
    edges: dict[tuple[str, str], list] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    object_of: dict[str, str] = field(default_factory=dict)  # function -> shared object it lives in
    file_of: dict[str, str] = field(default_factory=dict)  # function -> source file of its definition

    def inclusive_into(self, callees: set[str], exclude_callers: set[str] | None = None) -> tuple[int, int]:
        """Cost and count of the calls into ``callees`` from functions outside ``exclude_callers``
        (default: outside ``callees``), i.e. the inclusive cost of that group as entered from elsewhere."""
        outside = callees if exclude_callers is None else exclude_callers
        cost = calls = 0
        for (caller, callee), (c, n) in self.edges.items():
            if callee in callees and caller not in outside:
                cost += c
                calls += n
        return cost, calls

    def callees_of(self, callers: set[str]) -> dict[str, list]:
        """Calls made by ``callers`` to functions outside them: callee -> [cost, calls]."""
        out: dict[str, list] = defaultdict(lambda: [0, 0])
        for (caller, callee), (c, n) in self.edges.items():
            if caller in callers and callee not in callers:
                out[callee][0] += c
                out[callee][1] += n
        return out

    def functions_in_object(self, fragment: str) -> set[str]:
        return {fn for fn, obj in self.object_of.items() if fragment in obj}

    def functions_in_file(self, fragment: str) -> set[str]:
        return {fn for fn, path in self.file_of.items() if fragment in path}


def read(path: str) -> Profile:
    profile = Profile()
    names: dict[str, dict[str, str]] = {"fn": {}, "fl": {}, "ob": {}}

    def name(kind: str, value: str) -> str:
        match = _DEFINITION.match(value)
        if match is None:
            return value
        ident, text = match.groups()
        table = names[kind]
        if text is not None:
            table[ident] = text
        return table.get(ident, value)

    current_fn = current_file = current_object = ""
    callee = ""
    pending_call = 0
    with open(path, errors="replace") as handle:
        for line in handle:
            if not line or line == "\n":
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                cost = int(line.split()[-1]) if len(line.split()) > 1 else 0
                if pending_call:
                    edge = profile.edges[(current_fn, callee)]
                    edge[0] += cost
                    edge[1] += pending_call
                    pending_call = 0
                else:
                    profile.self_cost[current_fn] += cost
                    profile.total += cost
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key == "fn":
                current_fn = _RECURSION.sub("", name("fn", value))
                profile.object_of.setdefault(current_fn, current_object)
                profile.file_of.setdefault(current_fn, current_file)
            elif key == "fl":
                current_file = name("fl", value)
            elif key in ("fi", "fe"):
                name("fl", value)
            elif key == "ob":
                current_object = name("ob", value)
            elif key in ("cob",):
                name("ob", value)
            elif key in ("cfi", "cfl"):
                name("fl", value)
            elif key == "cfn":
                callee = _RECURSION.sub("", name("fn", value))
            elif key == "calls":
                pending_call = int(value.split()[0]) or 1
    return profile
