"""Execution paths: the call tree of sensed functions, one node per function at a path.

A node is ``(parent node, function id)``; node 0 is the root, the request (or task) itself, and the
functions a request enters first are its children. The sensor keeps, on each in-flight invocation,
the node it runs at, and records the call under that node: per node the same counters as per
function (calls, errors, total and self time), and a function's figures are the sum over its nodes.

Finding a call's node costs one look-up when the function last ran under the same parent (almost
always): ``last[fid]`` is ``(parent, node)`` of its last call (one tuple, replaced whole, so a
thread never reads one call's parent with another's node). Otherwise :meth:`PathRegistry.child`
decides, once per distinct edge:

* **Recursion is folded**: a function already on the path runs at that ancestor's node, so
  ``a -> b -> a -> b`` is the two nodes ``a`` and ``a/b`` (their calls count every level; total
  time counts nested levels again, as per function).
* **Depth is capped** (``max_depth``): below it, every call runs at one ``(other paths)`` node.
* **Nodes are capped** (``max_nodes`` per process): past it, a new edge runs at the
  ``(other paths)`` child of its parent, and ``dropped`` counts the edges folded so.

The per-route cap (``FUNCSIGHT_MAX_PATHS``) is the window's, applied when requests are folded in.
This module is the Python twin of the C sensor's path table (``csensor/paths.h``); both answer
``child(parent, fid)`` alike, and the same tests run on both.
"""

from __future__ import annotations

import threading

ROOT = 0
OTHER = -1  # the function id of an "(other paths)" node
MAX_NODES = 100_000  # per process: at 10 bytes a node (C) the registry stays under 1 MB plus its edge map
_NO_FUNCTION = -2  # the root's


class PathRegistry:
    def __init__(self, max_nodes: int = MAX_NODES, max_depth: int = 64):
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.parent: list[int] = [ROOT]
        self.fid: list[int] = [_NO_FUNCTION]
        self.depth: list[int] = [0]
        self.dropped = 0  # edges folded into an "(other paths)" node by the node cap
        # Per function id: (the parent it last ran under, its node there): the hot path's cache.
        self.last: list[tuple[int, int]] = []
        self._edges: dict[tuple[int, int], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.parent)

    def child(self, parent: int, fid: int) -> int:
        """The node a call of ``fid`` runs at under ``parent`` (made on first sight)."""
        edge = (parent, fid)
        node = self._edges.get(edge)
        if node is None:
            with self._lock:
                node = self._edges.get(edge)
                if node is None:
                    node = self._edges[edge] = self._place(parent, fid)
        if fid >= 0:
            self.ensure(fid)
            self.last[fid] = (parent, node)
        return node

    def ensure(self, fid: int) -> None:
        """Room in the cache for function ids up to ``fid`` (called when a function is registered)."""
        last = self.last
        if fid >= len(last):
            last.extend([(-1, ROOT)] * (fid + 1 - len(last)))

    def _place(self, parent: int, fid: int) -> int:
        fids, parents = self.fid, self.parent
        if fids[parent] == OTHER:
            return parent  # everything below an "(other paths)" node stays in it
        ancestor = parent
        while ancestor != ROOT:
            if fids[ancestor] == fid:
                return ancestor  # recursion: the function's node higher up the path
            ancestor = parents[ancestor]
        if self.depth[parent] >= self.max_depth:
            return self._other(parent)
        if len(parents) >= self.max_nodes:
            self.dropped += 1
            return self._other(parent)
        return self._new(parent, fid)

    def _other(self, parent: int) -> int:
        edge = (parent, OTHER)
        node = self._edges.get(edge)
        if node is None:  # one per parent at most, so the cap is exceeded by a bounded amount
            node = self._edges[edge] = self._new(parent, OTHER)
        return node

    def _new(self, parent: int, fid: int) -> int:
        self.parent.append(parent)
        self.fid.append(fid)
        self.depth.append(self.depth[parent] + 1)
        return len(self.parent) - 1

    def parent_of(self, node: int) -> int:
        return self.parent[node]

    def fid_of(self, node: int) -> int:
        """The node's function id (``OTHER`` for an "(other paths)" node, -2 for the root)."""
        return self.fid[node]

    def other_of(self, node: int) -> int:
        """The "(other paths)" child of ``node`` (``node`` itself when it is one)."""
        if self.fid[node] == OTHER:
            return node
        with self._lock:
            return self._other(node)

    def path_of(self, node: int) -> tuple[int, ...]:
        """The function ids from the root's child down to ``node`` (``OTHER`` for such a node)."""
        path = []
        while node != ROOT:
            path.append(self.fid[node])
            node = self.parent[node]
        path.reverse()
        return tuple(path)

    def reset(self) -> None:
        """After fork: the child keeps its parent's nodes (ids stay valid in copied tables)."""
        self._lock = threading.Lock()
