"""Call trees: a route's execution paths per request, one version or two side by side.

A source gives path nodes aggregated over a version (:class:`~funcsight.sources.base.PathAggregate`:
the functions from the route's entry down to the node, and its calls, errors, total and self time).
Here they become a tree whose root stands for the route (one call per request, the route's mean latency; its self time
is the time no sensed function accounts for), with figures per request, and are rendered as JSON,
an indented table, collapsed stacks (flamegraph.pl / Pyroscope) or a speedscope file.

Pure functions over records: no store, no OpenTelemetry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from funcsight.analysis.breakdown import AnalysisError, check_filters
from funcsight.sources.base import PathAggregate, Source

@dataclass
class TreeNode:
    function: str
    file: str | None
    line: int | None
    calls: float  # per request
    total_ms: float  # per request
    self_ms: float  # per request
    errors: int
    errors_by_type: dict = field(default_factory=dict)
    share: float = 0.0  # of the route's time per request
    children: list[TreeNode] = field(default_factory=list)
    # A differential tree's other side (None: one version only, or the node is new / vanished).
    before: TreeNode | None = None
    status: str = ""  # "", "new" or "vanished" (differential trees)

    def as_dict(self, max_depth: int | None = None, min_share: float = 0.0, _depth: int = 0) -> dict:
        out = {
            "function": self.function,
            "file": self.file,
            "line": self.line,
            "calls_per_request": round(self.calls, 4),
            "total_ms_per_request": round(self.total_ms, 4),
            "self_ms_per_request": round(self.self_ms, 4),
            "share": round(self.share, 4),
            "errors": self.errors,
        }
        if self.errors_by_type:
            out["errors_by_type"] = dict(self.errors_by_type)
        if self.status:
            out["status"] = self.status
        if self.before is not None or self.status:
            before = self.before
            out["before"] = None if before is None else {
                "calls_per_request": round(before.calls, 4),
                "total_ms_per_request": round(before.total_ms, 4),
                "self_ms_per_request": round(before.self_ms, 4),
                "errors": before.errors,
            }
        kept = [c for c in self.children if max(c.share, c.before.share if c.before else 0.0) >= min_share]
        if max_depth is not None and _depth >= max_depth:
            out["children"] = []
            if self.children:
                out["children_omitted"] = len(self.children)
            return out
        out["children"] = [c.as_dict(max_depth, min_share, _depth + 1) for c in kept]
        if len(kept) < len(self.children):
            out["children_omitted"] = len(self.children) - len(kept)
        return out


@dataclass
class CallTree:
    route: str
    version: str | None
    requests: int
    root: TreeNode
    baseline: str | None = None  # differential trees: the version ``before`` figures come from
    baseline_requests: int = 0

    def as_dict(self, max_depth: int | None = None, min_share: float = 0.0) -> dict:
        out = {"route": self.route, "version": self.version, "requests": self.requests}
        if self.baseline is not None:
            out["baseline"] = self.baseline
            out["baseline_requests"] = self.baseline_requests
        out["root"] = self.root.as_dict(max_depth, min_share)
        return out


def call_tree(source: Source, route: str, version: str | None = None) -> CallTree:
    """The call tree of ``route`` (in ``version``; None: every version together)."""
    check_filters(source, route, version)
    routes = source.route_aggregates(route, version)
    requests = sum(agg.requests for agg in routes.values())
    total_ns = sum(agg.total_ns for agg in routes.values())
    failed = sum(agg.errors for agg in routes.values())
    nodes: dict[tuple, PathAggregate] = {}
    for (_route, _version, path), agg in source.path_aggregates(route, version).items():
        into = nodes.get(path)
        if into is None:
            nodes[path] = into = PathAggregate(path, file=agg.file, line=agg.line)
        into.calls += agg.calls
        into.errors += agg.errors
        into.total_ns += agg.total_ns
        into.self_ns += agg.self_ns
        for name, count in agg.errors_by_type.items():
            into.errors_by_type[name] = into.errors_by_type.get(name, 0) + count
    if not nodes and requests:
        raise AnalysisError(f"no call paths recorded for route {route!r}"
                            + (f" in version {version!r}" if version else "")
                            + ": the store predates execution paths, or no sensed function ran for it")
    return build_tree(route, version, requests, total_ns, failed, list(nodes.values()))


def call_tree_diff(source: Source, route: str, baseline: str, candidate: str) -> CallTree:
    """The differential tree of ``route``: ``candidate``'s nodes with ``baseline``'s figures."""
    if baseline == candidate:
        raise AnalysisError("baseline and candidate are the same version: nothing to compare")
    return diff_trees(call_tree(source, route, baseline), call_tree(source, route, candidate))


def build_tree(route: str, version: str | None, requests: int, route_total_ns: int, route_errors: int,
               nodes: list[PathAggregate]) -> CallTree:
    """The tree of ``nodes`` (any order; a node whose parent is missing hangs under the nearest
    ancestor present, else the root). Per-request figures divide by ``requests``."""
    per = 1.0 / requests if requests else 0.0
    route_ms = route_total_ns * per / 1e6
    root = TreeNode(route, None, None, 1.0 if requests else 0.0, route_ms, route_ms, route_errors, share=1.0 if route_ms else 0.0)
    by_path: dict[tuple[str, ...], TreeNode] = {(): root}
    for node in sorted(nodes, key=lambda n: len(n.path)):
        parent_path = node.path[:-1]
        while parent_path not in by_path:
            parent_path = parent_path[:-1]
        tree_node = TreeNode(
            node.path[-1], node.file, node.line, node.calls * per, node.total_ns * per / 1e6,
            node.self_ns * per / 1e6, node.errors, dict(node.errors_by_type),
            share=(node.total_ns * per / 1e6) / route_ms if route_ms else 0.0,
        )
        by_path[node.path] = tree_node
        by_path[parent_path].children.append(tree_node)
    # The root's own time: what no sensed entry point accounts for (framework, unsensed code).
    root.self_ms = max(0.0, route_ms - sum(child.total_ms for child in root.children))
    _sort(root)
    return CallTree(route, version, requests, root)


def _sort(node: TreeNode) -> None:
    node.children.sort(key=lambda c: (-c.total_ms, -c.calls, c.function))
    for child in node.children:
        _sort(child)


def diff_trees(before: CallTree, after: CallTree) -> CallTree:
    """``after``'s tree with every node's ``before`` figures; nodes only in ``before`` are added
    as ``vanished`` (zero figures after), nodes only in ``after`` are marked ``new``."""

    def merge(old: TreeNode | None, new: TreeNode) -> None:
        new.before = old
        old_children = {c.function: c for c in old.children} if old is not None else {}
        for child in new.children:
            match = old_children.pop(child.function, None)
            if match is None:
                child.status = "new"
            merge(match, child)
        for gone in old_children.values():
            vanished = TreeNode(gone.function, gone.file, gone.line, 0.0, 0.0, 0.0, 0, status="vanished")
            merge(gone, vanished)
            vanished.status = "vanished"
            new.children.append(vanished)

    merge(before.root, after.root)
    after.root.status = ""
    after.baseline = before.version
    after.baseline_requests = before.requests
    return after


# ----------------------------------------------------------------------------------- renderers
def render_table(tree: CallTree, max_depth: int | None = None, min_share: float = 0.0, max_rows: int = 200) -> str:
    """The indented tree, one node a line: calls, total and self ms per request and share."""
    differential = tree.baseline is not None
    if differential:
        head = f"{'calls/req':>21}  {'total ms/req':>23}  {'self ms/req':>23}  {'share':>6}  function"
        title = f"{tree.route}: {tree.baseline} ({tree.baseline_requests} requests) -> {tree.version} ({tree.requests} requests)"
    else:
        head = f"{'calls/req':>10}  {'total ms/req':>12}  {'self ms/req':>11}  {'share':>6}  errors  function"
        title = f"{tree.route}" + (f" (version {tree.version})" if tree.version else "") + f": {tree.requests} requests"
    lines = [title, head]
    omitted = 0

    def visit(node: TreeNode, depth: int) -> None:
        nonlocal omitted
        if len(lines) - 2 >= max_rows:
            omitted += 1
            return
        lines.append(_row(node, depth, differential))
        if max_depth is not None and depth >= max_depth:
            omitted += _count(node) - 1
            return
        for child in node.children:
            if max(child.share, child.before.share if child.before else 0.0) < min_share:
                omitted += _count(child)
                continue
            visit(child, depth + 1)

    visit(tree.root, 0)
    if omitted:
        lines.append(f"({omitted} nodes not shown: raise --max-depth / --max-rows or lower --min-share)")
    return "\n".join(lines)


def _count(node: TreeNode) -> int:
    return 1 + sum(_count(c) for c in node.children)


def _row(node: TreeNode, depth: int, differential: bool) -> str:
    name = "  " * depth + node.function + (f"  [{node.status}]" if node.status else "")
    if not differential:
        return (f"{node.calls:>10.2f}  {node.total_ms:>12.3f}  {node.self_ms:>11.3f}  {node.share:>6.1%}  "
                f"{node.errors:>6}  {name}")
    b = node.before
    return (f"{_pair(b.calls if b else 0.0, node.calls, 2):>21}  {_pair(b.total_ms if b else 0.0, node.total_ms, 3):>23}  "
            f"{_pair(b.self_ms if b else 0.0, node.self_ms, 3):>23}  {node.share:>6.1%}  {name}")


def _pair(before: float, after: float, digits: int) -> str:
    return f"{before:.{digits}f} -> {after:.{digits}f}"


def render_folded(tree: CallTree) -> str:
    """Collapsed stacks: ``route;f;g <self microseconds per request x requests>`` per node, the
    flamegraph.pl / Pyroscope input (integers; nodes with no self time are left out)."""
    lines = []

    def visit(node: TreeNode, stack: list[str]) -> None:
        stack = stack + [_frame_name(node.function)]
        weight = round(node.self_ms * 1000 * tree.requests)
        if weight > 0:
            lines.append(f"{';'.join(stack)} {weight}")
        for child in node.children:
            visit(child, stack)

    visit(tree.root, [])
    return "\n".join(lines) + ("\n" if lines else "")


def _frame_name(name: str) -> str:
    return name.replace(";", ":").replace("\n", " ").replace(" ", "_") or "?"


SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def render_speedscope(tree: CallTree) -> dict:
    """speedscope's file format: one ``sampled`` profile whose samples are the tree's paths,
    weighted by their self time in microseconds (over all requests)."""
    frames: list[dict] = []
    index: dict[tuple, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []

    def frame(node: TreeNode) -> int:
        key = (node.function, node.file, node.line)
        if key not in index:
            index[key] = len(frames)
            entry = {"name": node.function}
            if node.file:
                entry["file"] = node.file
            if node.line:
                entry["line"] = node.line
            frames.append(entry)
        return index[key]

    def visit(node: TreeNode, stack: list[int]) -> None:
        stack = stack + [frame(node)]
        weight = round(node.self_ms * 1000 * tree.requests)
        if weight > 0:
            samples.append(stack)
            weights.append(weight)
        for child in node.children:
            visit(child, stack)

    visit(tree.root, [])
    name = f"{tree.route}" + (f" @ {tree.version}" if tree.version else "")
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": [{
            "type": "sampled", "name": name, "unit": "microseconds",
            "startValue": 0, "endValue": sum(weights), "samples": samples, "weights": weights,
        }],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": "funcsight",
    }
