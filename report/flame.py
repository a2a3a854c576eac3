"""Flame graphs of the call trees (:mod:`funcsight.analysis.tree`), drawn in Python as inline SVG.

An icicle: the route at the top, each function under its caller, children side by side within
their parent (heaviest first), width = total time per request. One graph per route for the
candidate version, and a differential graph per route recorded in both versions:

* width = the candidate's total time per request; a ``vanished`` node (called in the baseline, not
  in the candidate) is drawn grey with a dashed border at the baseline's width. To make room for
  it, its ancestors get a pale extension ("room for vanished paths") beside their own box, so no
  box is ever wider than the node's own time.
* colour = the change of the node's total time per request: red slower, blue faster, stronger the
  larger the relative change (full at +100 % / -50 %, i.e. twice or half the time); neutral within
  ``NEUTRAL_RELATIVE`` of the baseline or when the change is below ``NEUTRAL_OF_ROUTE`` of the
  route's time (noise on tiny nodes). A ``new`` node is full red with a dark border and a ``+``.

Bounded: at most ``MAX_BOXES`` boxes per graph (the heaviest; a parent always before its
children), the rest counted in the caption. Labels are cut to the box (monospace, so their width
is known) and every piece of application text is escaped. Each box carries a ``<title>`` tooltip
(function, file:line, calls, total and self ms per request, share) and ``data-*`` attributes with
the figures it was drawn from.
"""

from __future__ import annotations

import heapq
import math
import zlib
from html import escape

MAX_BOXES = 200  # per graph
WIDTH, ROW_H, PAD = 1240, 18, 1.0
CHAR_W, MIN_LABEL_CHARS = 6.7, 3  # 11px DejaVu Sans Mono advances 6.6px
NEUTRAL_RELATIVE = 0.10
NEUTRAL_OF_ROUTE = 0.002
SLOWER, FASTER, NEUTRAL = (214, 39, 40), (37, 99, 235), (221, 214, 204)
NEW_STROKE, VANISHED_FILL, VANISHED_STROKE, ROOM_FILL, ROOT_FILL = "#7f1d1d", "#e5e7eb", "#6b7280", "#f1f5f9", "#cbd5e1"

CSS = """
svg.flame{width:100%;height:auto;display:block}
svg.flame text{font:11px ui-monospace,"DejaVu Sans Mono",monospace;fill:#1e293b;pointer-events:none}
svg.flame text.light{fill:#fff}
svg.flame g.box:hover rect.node{stroke:#0f172a;stroke-width:1.5}
.sw.slower{background:rgb(214,39,40)}.sw.slower2{background:rgb(228,121,107)}.sw.neutral{background:rgb(221,214,204)}
.sw.faster2{background:rgb(122,150,220)}.sw.faster{background:rgb(37,99,235)}
.sw.new{background:rgb(214,39,40);outline:2px solid #7f1d1d}.sw.vanished{background:#e5e7eb;outline:1px dashed #6b7280}
.sw.room{background:#f1f5f9;outline:1px solid #e2e8f0}.sw.warm{background:linear-gradient(90deg,#f59e3b,#f7c95c)}
"""


def esc(value) -> str:
    return escape(str(value), quote=True)


def _value(node) -> float:
    """The time a box stands for: the candidate's total (the baseline's for a vanished node)."""
    if node.status == "vanished":
        return node.before.total_ms if node.before is not None else 0.0
    return node.total_ms


def _weights(node, into: dict) -> float:
    """Room a node needs: its own time, or more when its children (vanished ones) need more."""
    need = max(_value(node), sum(_weights(child, into) for child in node.children))
    into[id(node)] = need
    return need


def _select(root, weights: dict, limit: int) -> tuple[set, int]:
    """The ``limit`` heaviest nodes, each with its parent (children never outweigh their parent)."""
    kept, heap, total, order = set(), [(-weights[id(root)], 0, root)], 0, 1
    while heap:
        _, _, node = heapq.heappop(heap)
        total += 1
        if len(kept) >= limit:
            continue
        kept.add(id(node))
        for child in node.children:
            heapq.heappush(heap, (-weights[id(child)], order, child))
            order += 1
    return kept, total - len(kept)


def _label(prefix: str, text: str, width: float) -> str:
    """``prefix + text``, the text cut (from the left: the end of a qualified name says most) to fit
    ``width`` px; empty when not even a few characters fit."""
    fits = int((width - 2 * 3) / CHAR_W) - len(prefix)
    if fits < MIN_LABEL_CHARS:
        return ""
    return prefix + (text if len(text) <= fits else "\u2026" + text[-(fits - 1):])


def _mix(color: tuple, amount: float) -> tuple:
    return tuple(round(n + (c - n) * amount) for n, c in zip(NEUTRAL, color))


def _rgb(color: tuple) -> str:
    return f"rgb({color[0]},{color[1]},{color[2]})"


def _dark(color: tuple) -> bool:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] < 150


def _warm(name: str) -> tuple:
    """A stable warm colour per function name (the classic flame graph palette; no meaning)."""
    h = zlib.crc32(name.encode("utf-8", "replace"))
    return (240 + h % 12, 150 + (h >> 4) % 70, 50 + (h >> 12) % 50)


def change_of(node, route_ms: float) -> tuple[str, float, tuple]:
    """``(kind, relative change, colour)`` of a differential node: kind is ``new``, ``vanished``,
    ``slower``, ``faster`` or ``same`` (within the neutral margin)."""
    if node.status == "new" or (node.before is None and not node.status):
        return "new", float("inf"), SLOWER
    if node.status == "vanished":
        return "vanished", -1.0, NEUTRAL
    before, after = node.before.total_ms, node.total_ms
    change = after - before
    relative = change / before if before > 0 else (float("inf") if change > 0 else 0.0)
    if abs(relative) < NEUTRAL_RELATIVE or abs(change) < NEUTRAL_OF_ROUTE * route_ms:
        return "same", relative, NEUTRAL
    # Intensity by how many times slower or faster (log scale): x2 or /2 is full colour.
    ratio = after / before if before > 0 and after > 0 else (64.0 if change > 0 else 1 / 64)
    strength = min(1.0, 0.25 + 0.75 * abs(math.log2(ratio)))
    return ("slower", relative, _mix(SLOWER, strength)) if change > 0 else ("faster", relative, _mix(FASTER, strength))


def _fmt_location(node) -> str:
    if not node.file:
        return "(file unknown)"
    return f"{node.file}:{node.line}" if node.line else node.file


def _tooltip(node, tree, is_root: bool, kind: str, relative: float) -> str:
    where = "route" if is_root else _fmt_location(node)
    if tree.baseline is None:
        lines = [node.function, where, f"{node.calls:.4g} calls/req \u00b7 total {node.total_ms:.3f} ms/req \u00b7 "
                 f"self {node.self_ms:.3f} ms/req \u00b7 {node.share:.1%} of the route"]
        if node.errors:
            lines.append(f"{node.errors} errors")
        return "\n".join(lines)
    b = node.before
    status = {"new": f"new in {tree.version}", "vanished": f"not called in {tree.version}"}.get(kind, "")
    b_calls, b_total, b_self = (b.calls, b.total_ms, b.self_ms) if b is not None else (0.0, 0.0, 0.0)
    change = "" if kind in ("new", "vanished") or math.isinf(relative) else f", {relative:+.0%}"
    lines = [node.function + (f" [{status}]" if status else ""), where,
             f"calls/req {b_calls:.4g} \u2192 {node.calls:.4g}",
             f"total ms/req {b_total:.3f} \u2192 {node.total_ms:.3f} ({node.total_ms - b_total:+.3f}{change})",
             f"self ms/req {b_self:.3f} \u2192 {node.self_ms:.3f}",
             f"share {b.share if b is not None else 0.0:.1%} \u2192 {node.share:.1%} of the route"]
    if node.errors or (b is not None and b.errors):
        lines.append(f"errors {b.errors if b is not None else 0} \u2192 {node.errors}")
    return "\n".join(lines)


def flame(tree, max_boxes: int = MAX_BOXES) -> tuple[str, int]:
    """The SVG of ``tree`` (differential when ``tree.baseline`` is set) and the number of nodes not
    drawn (over ``max_boxes``)."""
    differential = tree.baseline is not None
    weights: dict = {}
    root_weight = _weights(tree.root, weights)
    kept, dropped = _select(tree.root, weights, max_boxes)
    scale = (WIDTH - 2 * PAD) / root_weight if root_weight > 0 else 0.0
    route_ms = tree.root.before.total_ms if differential and tree.root.before is not None else tree.root.total_ms
    boxes: list[str] = []
    depth_max = 0

    def draw(node, x: float, depth: int, path: tuple) -> None:
        nonlocal depth_max
        depth_max = max(depth_max, depth)
        is_root = depth == 0
        value, weight = _value(node), weights[id(node)]
        width, y = value * scale, depth * ROW_H
        kind, relative, color = ("root", 0.0, None) if is_root and not differential else \
            change_of(node, route_ms) if differential else ("node", 0.0, _warm(node.function))
        fill = _rgb(color) if color is not None else ROOT_FILL
        stroke = ""
        if kind == "new":
            stroke = f' stroke="{NEW_STROKE}" stroke-width="1.5"'
        elif kind == "vanished":
            fill, stroke = VANISHED_FILL, f' stroke="{VANISHED_STROKE}" stroke-dasharray="3,2"'
        name = node.function if not is_root else f"{node.function}  {value:.3f} ms/req"
        label = _label("+ " if kind == "new" else "\u2212 " if kind == "vanished" else "", name, width)
        before = node.before.total_ms if differential and node.before is not None else None
        attrs = (f' data-path="{esc(";".join(path))}" data-function="{esc(node.function)}" data-depth="{depth}"'
                 f' data-total="{value!r}" data-kind="{kind}"' + (f' data-before="{before!r}"' if before is not None else ""))
        text = ""
        if label:
            light = color is not None and kind != "vanished" and _dark(color)
            css = ' class="light"' if light else ""
            text = f'<text x="{x + 3:.2f}" y="{y + 12.5:.2f}"{css}>{esc(label)}</text>'
        boxes.append(f'<g class="box {kind}"{attrs}><title>{esc(_tooltip(node, tree, is_root, kind, relative))}</title>'
                     f'<rect class="node" x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="{ROW_H - 1}" rx="1.5" '
                     f'fill="{fill}"{stroke}/>{text}</g>')
        if weight - value > 1e-9 and (weight - value) * scale >= 0.5:
            boxes.append(f'<rect class="room" x="{x + width:.2f}" y="{y:.2f}" width="{(weight - value) * scale:.2f}" '
                         f'height="{ROW_H - 1}" fill="{ROOM_FILL}"><title>room for the vanished paths below (no time in '
                         f'{esc(tree.version)})</title></rect>')
        cursor = x
        for child in node.children:  # a child not kept leaves its room empty
            if id(child) in kept:
                draw(child, cursor, depth + 1, path + (child.function,))
            cursor += weights[id(child)] * scale

    draw(tree.root, PAD, 0, ())
    height = (depth_max + 1) * ROW_H + 2
    extra = f' data-baseline="{esc(tree.baseline)}"' if differential else ""
    svg = (f'<svg class="flame{" differential" if differential else ""}" role="img" viewBox="0 0 {WIDTH} {height}" '
           f'width="{WIDTH}" height="{height}" data-route="{esc(tree.route)}" data-version="{esc(tree.version)}"'
           f' data-scale="{scale!r}" data-dropped="{dropped}"{extra}>{"".join(boxes)}</svg>')
    return svg, dropped


def legend(differential: bool, baseline: str | None = None, candidate: str | None = None) -> str:
    if not differential:
        return ('<div class="legend"><span>width = total time per request, children under their caller</span>'
                '<span><i class="sw warm"></i>a function (the colour has no meaning)</span></div>')
    items = [("slower", f"slower in {candidate} (x2 or more)"), ("slower2", "a little slower"),
             ("neutral", f"within {NEUTRAL_RELATIVE:.0%}"), ("faster2", "a little faster"), ("faster", "faster (/2 or more)"),
             ("new", f"+ new in {candidate}"), ("vanished", f"\u2212 not called in {candidate} (at its {baseline} width)"),
             ("room", "room for vanished paths")]
    return ('<div class="legend"><span>width = total time per request in ' + esc(candidate) + "</span>"
            + "".join(f'<span><i class="sw {k}"></i>{esc(v)}</span>' for k, v in items) + "</div>")


def _figure(tree, caption: str) -> str:
    svg, dropped = flame(tree)
    more = f" \u00b7 {dropped} smaller boxes not drawn" if dropped else ""
    return (f'<figure class="flame"><h3>{esc(tree.route)}</h3><figcaption>{esc(caption)}{more}</figcaption>{svg}</figure>')


def section(d) -> str:
    """The differential graphs (``#flamediff``, with a baseline) and the candidate's (``#flame``)."""
    if not d.trees:
        note = d.paths_note or "No execution paths recorded."
        return f'<div id="paths"><section id="flame"><h2>Execution paths</h2><p class="note">{esc(note)}</p></section></div>'
    out = ['<div id="paths">']
    if d.tree_diffs:
        figures = [_figure(t, f"{t.baseline} ({t.baseline_requests} requests) \u2192 {t.version} ({t.requests} requests): "
                              f"{t.root.before.total_ms if t.root.before else 0.0:.3f} \u2192 {t.root.total_ms:.3f} ms per request")
                   for t in d.tree_diffs]
        out.append(f'<section id="flamediff"><h2>Execution paths: what changed from {esc(d.baseline)} to {esc(d.candidate)}</h2>'
                   '<p class="note">Differential flame graphs: each route\'s call tree in the candidate, every box a function '
                   "under its caller, coloured by the change of its total time per request. Hover a box for its figures.</p>"
                   f"{legend(True, d.baseline, d.candidate)}{''.join(figures)}{_left_out(d)}</section>")
    figures = [_figure(t, f"{t.version}: {t.requests} requests, {t.root.total_ms:.3f} ms per request") for t in d.trees]
    out.append(f'<section id="flame"><h2>Execution paths in {esc(d.candidate)}</h2>'
               '<p class="note">Flame graphs (icicles): the route on top, each function under its caller, width = total time '
               "per request. Hover a box for its figures.</p>"
               f"{legend(False)}{''.join(figures)}{_left_out(d)}</section></div>")
    return "".join(out)


def _left_out(d) -> str:
    notes = []
    if d.trees_not_drawn:
        notes.append(f"{d.trees_not_drawn} routes with less time are not drawn.")
    if d.paths_note:
        notes.append(d.paths_note)
    return "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
