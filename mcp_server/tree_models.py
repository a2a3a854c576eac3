"""What the execution-path tools return (``call_tree``, ``locate_function``): pydantic models and
their text summaries, in the style of :mod:`funcsight.mcp_server.models` (units in the field names,
application text JSON-quoted in summaries, cuts stated).

A call tree can be large; :func:`bounded_tree` cuts it to a node count and a byte budget, keeping
the nodes with the most time, and says what it cut.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from pydantic import Field

from funcsight.mcp_server.models import DATA_NOTE, Output, q

MAX_TREE_BYTES = 60_000  # the tree's JSON in a reply, at most (the text summary is cut to ~8 KB)
_SUMMARY_LINES = 80


def bounded_tree(tree: dict, max_nodes: int, max_bytes: int = MAX_TREE_BYTES) -> tuple[dict, int, int]:
    """``(tree cut to at most max_nodes nodes and max_bytes of JSON, nodes kept, nodes in all)``,
    the nodes with the largest share of the route's time kept (in either version)."""
    def weight(node: dict) -> float:
        return max(node.get("share", 0.0), (node.get("before") or {}).get("share", 0.0))

    root, kept, total = bounded_nodes(tree["root"], max_nodes, max_bytes, weight)
    return {**{k: v for k, v in tree.items() if k != "root"}, "root": root}, kept, total


def bounded_nodes(root: dict, max_nodes: int, max_bytes: int, weight: Callable[[dict], float]) -> tuple[dict, int, int]:
    """A tree of ``{"children": [...], ...}`` nodes cut to at most ``max_nodes`` nodes and
    ``max_bytes`` of JSON: ``(root copy, nodes kept, nodes in all)``. The heaviest nodes by
    ``weight`` are kept, a node only with its parent; a kept node says how many children it lost
    (``children_omitted``)."""
    nodes: list[tuple[dict, int | None]] = []

    def collect(node: dict, parent: int | None) -> None:
        key = len(nodes)
        nodes.append((node, parent))
        for child in node.get("children", []):
            collect(child, key)

    collect(root, None)
    order = sorted(range(1, len(nodes)), key=lambda i: -weight(nodes[i][0]))
    limit = max(1, max_nodes)
    while True:
        keep = {0}
        for index in order:
            if len(keep) >= limit:
                break
            if nodes[index][1] in keep:
                keep.add(index)
        cut = _copy(nodes, keep)
        if len(json.dumps(cut, separators=(",", ":"))) <= max_bytes or limit == 1:
            return cut, len(keep), len(nodes)
        limit = max(1, limit * 2 // 3)


def _copy(nodes: list, keep: set[int]) -> dict:
    copies = {}
    for index in sorted(keep):  # parents come before their children in ``nodes``
        node, parent = nodes[index]
        copy = {k: v for k, v in node.items() if k not in ("children", "children_omitted")}
        copy["children"] = []
        copies[index] = copy
        if parent is not None:
            copies[parent]["children"].append(copy)
    for index, copy in copies.items():
        node = nodes[index][0]
        omitted = node.get("children_omitted", 0) + len(node.get("children", [])) - len(copy["children"])
        if omitted:
            copy["children_omitted"] = omitted
    return copies[0]


class CallTreeResult(Output):
    route: str
    version: str | None = Field(description="the version of the tree (None: all versions together)")
    baseline: str | None = Field(default=None, description="differential trees: the version `before` figures come from")
    requests: int = Field(description="requests of the route the figures are divided by")
    tree: dict[str, Any] = Field(description=(
        "root = the route (calls_per_request 1, total = mean request ms, self = time outside sensed code); each node: "
        "function, file, line, calls_per_request, total_ms_per_request, self_ms_per_request, share (of the route's "
        "time), errors, errors_by_type, children; differential trees add status ('new'/'vanished') and before {...}"))
    nodes_shown: int
    nodes_total: int
    note: str | None = None

    def summary(self) -> str:
        lines = []

        def visit(node: dict, depth: int) -> None:
            if len(lines) >= _SUMMARY_LINES:
                return
            before = node.get("before")
            change = (f" (before {before['calls_per_request']:g} calls, {before['total_ms_per_request']:.3f} ms)"
                      if before else "")
            status = f" [{node['status']}]" if node.get("status") else ""
            where = f" {q(node['file'])}:{node['line']}" if node.get("file") else ""
            lines.append(f"{'  ' * depth}- {q(node['function'])}{status}: {node['calls_per_request']:g} calls/req, "
                         f"total {node['total_ms_per_request']:.3f} ms/req, self {node['self_ms_per_request']:.3f} ms/req, "
                         f"{node['share']:.1%} of the route{change}"
                         + (f", errors {node['errors']}" if node.get("errors") else "") + where)
            for child in node.get("children", []):
                visit(child, depth + 1)

        visit(self.tree["root"], 0)
        scope = f"{q(self.baseline)} -> {q(self.version)}" if self.baseline else (q(self.version) if self.version else "all versions")
        head = f"Call tree of route {q(self.route)}, {scope}, {self.requests} requests (per request):"
        notes = [self.note] if self.note else []
        if self.nodes_shown > len(lines):
            notes.append(f"the text shows {len(lines)} nodes; the structured tree has {self.nodes_shown}")
        return "\n".join([head, *lines, *(f"NOTE: {n}" for n in notes), DATA_NOTE])


class Location(Output):
    version: str
    file: str
    line: int = Field(description="first line of the function")
    code_hash: str


class Caller(Output):
    route: str
    version: str
    path: list[str] = Field(description="functions from the route's entry down to the function")
    calls: int


class LocateResult(Output):
    function: str
    locations: list[Location] = Field(description="per version, where the function's code was")
    code_changed: bool | None = Field(description="between baseline and candidate (None when not asked or unknown)")
    paths: list[Caller] = Field(description="the call paths that reach it, most calls first")
    total_paths: int
    note: str | None = None

    def summary(self) -> str:
        body = [f"- {q(loc.version)}: {q(loc.file)}:{loc.line} (code {loc.code_hash[:12]})" for loc in self.locations]
        body += [f"- reached on {q(p.route)} ({q(p.version)}) via {' > '.join(q(f) for f in p.path)}: {p.calls} calls"
                 for p in self.paths]
        changed = {True: "; its code changed between the two versions", False: "; its code is the same in both versions",
                   None: ""}[self.code_changed]
        head = f"Function {q(self.function)}{changed}:"
        return "\n".join([head, *body, *([f"NOTE: {self.note}"] if self.note else []), DATA_NOTE])
