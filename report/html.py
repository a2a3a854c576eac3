"""The report page: one HTML document with inline CSS, inline SVG charts and a little inline JS.

Every piece of application data goes through :func:`esc` (``html.escape`` with quotes), in text and
in attributes alike; the only markup is written here. A Content Security Policy with the hashes of
the page's own style and script forbids any other script and every network fetch.

Charts (drawn in Python, so they show without JavaScript):

* per-route breakdown: one bar per function (the top ``MAX_BARS`` by self time per request in the
  candidate, the rest summed in one bar), with the baseline's value as a tick;
* waterfall: the route's mean latency in the baseline, one step per function's change of self time
  per request (the largest ``MAX_STEPS``, the rest summed), the change outside sensed code, and the
  candidate's mean: the steps add up to the change of the mean.
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape

from funcsight.analysis import wording
from funcsight.report import flame

MAX_BARS = 10
MAX_STEPS = 8
COLORS = {"pos": "#d64545", "neg": "#2a9d6a", "unexplained": "#8b6cd1", "rest": "#94a3b8", "total": "#475569",
          "bar": "#3b7dd8", "other": "#9dbbe6", "base": "#1e293b"}
WIDTH, LABEL_W, VALUE_W, ROW_H, BAR_H = 660, 230, 96, 24, 15

CSS = """
:root{--fg:#1e293b;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--pos:#d64545;--neg:#2a9d6a;--unx:#8b6cd1;--tot:#475569;--bar:#3b7dd8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:var(--bg)}
header{background:#0f172a;color:#f1f5f9;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#cbd5e1}
nav{margin-top:8px;display:flex;gap:16px}nav a{color:#93c5fd;text-decoration:none;font-size:13px}
main{max-width:1380px;margin:0 auto;padding:8px 24px 48px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;margin:18px 0;padding:14px 20px}
h2{font-size:18px;margin:4px 0 10px}
h3{font-size:14px;margin:0 0 2px;font-family:ui-monospace,"DejaVu Sans Mono",monospace;overflow-wrap:anywhere}
p.note{color:var(--muted);margin:4px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:6px 0 10px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}
.card span{color:var(--muted);font-size:12px}
.headline{font-size:15px;padding:8px 12px;border-left:4px solid var(--pos);background:#fef2f2}
.headline.ok{border-color:var(--neg);background:#f0fdf4}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:14px 22px}
figure{margin:0;padding:8px 0;border-top:1px solid var(--line)}
figcaption{color:var(--muted);font-size:12px;margin-bottom:4px}
svg.chart{width:100%;height:auto;display:block}
svg text{font-size:11.5px;fill:#1e293b}
svg text.v{fill:#334155}
svg text.axis{fill:#94a3b8;font-size:10px}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:12px;color:var(--muted);margin:2px 0 6px}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.sw.pos{background:var(--pos)}.sw.neg{background:var(--neg)}.sw.unexplained{background:var(--unx)}
.sw.total{background:var(--tot)}.sw.rest{background:#94a3b8}.sw.bar{background:var(--bar)}.sw.base{background:#1e293b;width:3px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f1f5f9;font-weight:600;white-space:nowrap}
table.sortable th{cursor:pointer}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.code,span.code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;overflow-wrap:anywhere}
td.code{min-width:9em}
tbody tr:nth-child(even){background:#fafbfc}
td.up{color:var(--pos);font-weight:600}td.down{color:var(--neg);font-weight:600}
details{margin:4px 0}summary{cursor:pointer;color:#2563eb}
ol.stack{margin:4px 0;padding-left:22px;font-family:ui-monospace,monospace;font-size:12px}
figure.flame{margin:0 0 10px}
""" + flame.CSS

JS = """
(function () {
  function key(cell) {
    var v = cell.getAttribute('data-v');
    return v === null ? cell.textContent.trim().toLowerCase() : parseFloat(v);
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('th');
    heads.forEach(function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          return (x < y ? -1 : x > y ? 1 : 0) * dir;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  document.body.setAttribute('data-ready', '1');
})();
"""


def esc(value) -> str:
    return escape(str(value), quote=True)


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


_time = wording.local_time


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def _cell(value, text: str | None = None) -> str:
    """A numeric cell: sorts by ``value``, shows ``text``."""
    if value is None:
        return '<td class="n" data-v="-1e308">-</td>'
    return f'<td class="n" data-v="{float(value)!r}">{esc(text if text is not None else value)}</td>'


def _table(headers: list[str], rows: list[str], cls: str = "sortable", attrs: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{cls}"{attrs}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _short(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else "\u2026" + name[-(limit - 1):]


def _nice_step(span: float) -> float:
    raw = span / 4 if span > 0 else 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _axis(lo: float, hi: float, x, top: float, bottom: float) -> str:
    out, step = [], _nice_step(hi - lo)
    tick = math.ceil(lo / step) * step
    while tick <= hi + 1e-9:
        px = x(tick)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" stroke="#e2e8f0"/>'
                   f'<text class="axis" x="{px:.1f}" y="{bottom + 12}" text-anchor="middle">{tick:g} ms</text>')
        tick += step
    return "".join(out)


def _svg(kind: str, route: str, rows: int, inner: str, extra: str = "") -> str:
    height = 10 + rows * ROW_H + 22
    return (f'<svg class="chart {kind}" role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
            f'data-route="{esc(route)}"{extra}>{inner}</svg>')


def _row(i: int, label: str, title: str, css: str, x1: float, x2: float, fill: str, value: str, attrs: str = "",
         value_x: float = WIDTH - VALUE_W + 6) -> str:
    y = 10 + i * ROW_H
    left, width = min(x1, x2), max(abs(x2 - x1), 1.0)
    return (f'<g class="{css}"{attrs}><title>{esc(title)}</title>'
            f'<text x="{LABEL_W - 6}" y="{y + 12}" text-anchor="end">{esc(_short(label))}</text>'
            f'<rect class="{"bar" if css.startswith("fn") else "wf"}" x="{left:.1f}" y="{y}" width="{width:.1f}" height="{BAR_H}" rx="2" fill="{fill}"/>'
            f'<text class="v" x="{value_x:.1f}" y="{y + 12}">{esc(value)}</text></g>')


def waterfall(ex) -> str:
    """Baseline mean, one step per part (largest first, the rest summed), outside sensed code, candidate mean."""
    steps = [(p.function if p.kind == "function" else f"[span] {p.function}", p.delta_ms,
              f"{p.function}: {p.baseline_ms_per_request:.3f} -> {p.candidate_ms_per_request:.3f} ms/request, "
              f"calls/request {p.calls_per_request_baseline:g} -> {p.calls_per_request_candidate:g}", None)
             for p in ex.parts[:MAX_STEPS]]
    rest = ex.parts[MAX_STEPS:]
    if rest:
        steps.append((f"({len(rest)} other functions)", sum(p.delta_ms for p in rest), "functions with smaller changes, summed", "rest"))
    steps.append(("(outside sensed code)", ex.unexplained_ms, "framework, server and unsensed code", "unexplained"))
    running, ends = ex.baseline_mean_ms, [ex.baseline_mean_ms]
    for step in steps:
        running += step[1]
        ends.append(running)
    lo, hi = min(0.0, *ends), max(*ends, ex.candidate_mean_ms, 1e-6)
    x0, span = LABEL_W, WIDTH - LABEL_W - VALUE_W

    def x(value: float) -> float:
        return x0 + (value - lo) / (hi - lo) * span

    count = len(steps) + 2
    parts = [_axis(lo, hi, x, 4, 10 + count * ROW_H)]
    parts.append(_row(0, f"{ex.baseline} mean", f"mean latency of {ex.route} in {ex.baseline}", "step total", x(0), x(ex.baseline_mean_ms),
                      COLORS["total"], f"{ex.baseline_mean_ms:.3f} ms", f' data-value="{ex.baseline_mean_ms}"'))
    running = ex.baseline_mean_ms
    for i, (label, delta, title, kind) in enumerate(steps, start=1):
        css = kind or ("pos" if delta > 0 else "neg")
        y = 10 + i * ROW_H
        parts.append(f'<line x1="{x(running):.1f}" x2="{x(running):.1f}" y1="{y - ROW_H + BAR_H}" y2="{y}" stroke="#94a3b8" stroke-dasharray="2,2"/>')
        parts.append(_row(i, label, f"{title} ({delta:+.3f} ms)", f"step {css}", x(running), x(running + delta), COLORS[css],
                          f"{delta:+.3f} ms", f' data-delta="{delta!r}" data-label="{esc(label)}"'))
        running += delta
    parts.append(_row(count - 1, f"{ex.candidate} mean", f"mean latency of {ex.route} in {ex.candidate}", "step total", x(0),
                      x(ex.candidate_mean_ms), COLORS["total"], f"{ex.candidate_mean_ms:.3f} ms", f' data-value="{ex.candidate_mean_ms}"'))
    return _svg("waterfall", ex.route, count, "".join(parts), f' data-change="{ex.change_ms!r}"')


def breakdown(route: str, rows: list, baseline_rows: dict, per_request: bool) -> str:
    """One bar per function: self time per request (total self time for work outside requests)."""
    def metric(row) -> float:
        return (row.self_ms_per_request or 0.0) if per_request else row.self_ms

    ordered = sorted(rows, key=lambda r: (-metric(r), r.function))
    shown, rest = ordered[:MAX_BARS], ordered[MAX_BARS:]
    bars = [(r.function if r.kind == "function" else f"[span] {r.function}", metric(r),
             metric(baseline_rows[(r.function, r.kind)]) if (r.function, r.kind) in baseline_rows else None, r) for r in shown]
    if rest:
        bars.append((f"({len(rest)} other functions)", sum(metric(r) for r in rest), None, None))
    hi = max([v for _, v, _, _ in bars] + [b for _, _, b, _ in bars if b is not None] + [1e-6])
    x0, span = LABEL_W, WIDTH - LABEL_W - 150  # room for the value after the longest bar

    def x(value: float) -> float:
        return x0 + value / hi * span

    parts = [_axis(0.0, hi, x, 4, 10 + len(bars) * ROW_H)]
    for i, (label, value, base, row) in enumerate(bars):
        if row is None:
            title = "functions with less self time, summed"
        else:
            title = (f"{row.function}: {value:.3f} ms self {'per request' if per_request else 'in total'}, "
                     f"{_num(row.calls_per_request) if per_request else row.calls} calls{'/request' if per_request else ''}, "
                     f"p95 {row.p95_ms:.3f} ms, {row.errors} errors")
            if base is not None:
                title += f"; baseline {base:.3f} ms"
        calls = f" \u00b7 {_num(row.calls_per_request)}/req" if row is not None and per_request else ""
        parts.append(_row(i, label, title, "fn" if row else "fn other", x(0), x(value), COLORS["bar" if row else "other"],
                          f"{value:.3f} ms{calls}", f' data-value="{value!r}" data-label="{esc(label)}"',
                          value_x=max(x(value), x(base) if base is not None else 0.0) + 6))
        if base is not None:
            y = 10 + i * ROW_H
            parts.append(f'<line class="base" x1="{x(base):.1f}" x2="{x(base):.1f}" y1="{y - 2}" y2="{y + BAR_H + 2}" '
                         f'stroke="{COLORS["base"]}" stroke-width="2"/>')
    return _svg("breakdown", route, len(bars), "".join(parts))


def _header(d) -> str:
    compared = f"{esc(d.baseline)} \u2192 {esc(d.candidate)}" if d.baseline else f"version {esc(d.candidate)} (no earlier version)"
    return (f"<header><h1>funcsight report: {compared}</h1><p>source <span class=\"code\">{esc(d.source)}</span> "
            f"\u00b7 generated {esc(_time(d.generated_at))}</p><nav>{NAV}</nav></header>")


NAV = "".join(f'<a href="#{k}">{v}</a>' for k, v in (("summary", "Summary"), ("routes", "Routes"), ("changes", "What changed"),
              ("breakdown", "Breakdowns"), ("paths", "Call paths"), ("diff", "Regressions"), ("anomalies", "Anomalies"), ("errors", "Errors")))


def _summary(d) -> str:
    cand = [r for r in d.routes if r.version == d.candidate]
    diff = d.diff
    cards = [("versions", len(d.versions)), (f"routes in {d.candidate}", len(cand)),
             (f"requests in {d.candidate}", sum(r.requests for r in cand))]
    if diff is not None:
        cards += [("regressions", len(diff.regressions)), ("improvements", len(diff.improvements))]
    cards += [("anomalies", len(d.anomalies)), ("exception records", len(d.errors))]
    html = ['<section id="summary"><h2>Summary</h2><div class="cards">']
    html += [f'<div class="card" data-card="{esc(k)}"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for k, v in cards]
    html.append("</div>")
    if diff is not None and diff.regressions:
        top = diff.regressions[0]
        html.append(f'<p class="headline" id="top-regression">Top regression: <span class="code">{esc(top.function)}</span> on '
                    f'<span class="code">{esc(top.route)}</span>: {esc(_signed(top.impact_ms_per_request))} ms per request '
                    f'({esc(top.change.replace("_", " "))}, p = {top.p_value:.1e})</p>')
    elif diff is not None:
        html.append(f'<p class="headline ok" id="top-regression">No significant regression from {esc(d.baseline)} to {esc(d.candidate)}.</p>')
    rows = [f"<tr><td>{esc(v.version)}</td><td>{esc(v.source)}</td><td>{esc(_time(v.first_seen))}</td><td>{esc(_time(v.last_seen))}</td>"
            f"{_cell(v.processes)}{_cell(v.requests)}{_cell(v.calls)}</tr>" for v in d.versions]
    html.append(_table(["version", "detected from", "first seen", "last seen", "processes", "requests", "calls"], rows, attrs=' id="versions"'))
    return "".join(html) + "</section>"


def _findings(findings: list, table_id: str) -> str:
    rows = []
    for f in findings:
        before, after = wording.before_after(f)
        changed = wording.code_changed(f.code_changed)
        rows.append(f'<tr>{_cell(f.impact_ms_per_request, _signed(f.impact_ms_per_request))}<td class="code">{esc(f.function)}</td>'
                    f'<td class="code">{esc(f.route)}</td><td>{esc(f.change.replace("_", " "))}</td><td>{esc(before)}</td>'
                    f'<td>{esc(after)}</td>{_cell(f.p_value, f"{f.p_value:.1e}")}<td>{changed}</td></tr>')
    headers = ["impact ms/req", "function", "route", "change", "before", "after", "p", "code changed"]
    return _table(headers, rows, attrs=f' id="{table_id}"')


def _changes(d) -> str:
    if d.diff is None:
        why = (f"Only one version is recorded ({esc(d.candidate)}): there is nothing to compare yet." if len(d.versions) < 2
               else f"No version was recorded before {esc(d.candidate)}: name a --baseline to compare it with.")
        return f'<section id="changes"><h2>What changed</h2><p class="note">{why}</p></section>'
    legend = ('<div class="legend"><span><i class="sw total"></i>mean latency per request</span><span><i class="sw pos"></i>slower</span>'
              '<span><i class="sw neg"></i>faster</span><span><i class="sw rest"></i>smaller changes, summed</span>'
              '<span><i class="sw unexplained"></i>outside sensed code</span></div>')
    figures = [f'<figure><h3>{esc(ex.route)}</h3><figcaption>mean {ex.baseline_mean_ms:.3f} \u2192 {ex.candidate_mean_ms:.3f} ms '
               f'per request, change {esc(_signed(ex.change_ms))} ms</figcaption>{waterfall(ex)}</figure>' for ex in d.explanations]
    more = f'<p class="note">{d.routes_not_drawn} routes with smaller changes are not drawn.</p>' if d.routes_not_drawn else ""
    return (f'<section id="changes"><h2>What changed from {esc(d.baseline)} to {esc(d.candidate)}, per route</h2>'
            '<p class="note">Each route\'s change of mean latency, decomposed into each function\'s change of self time per '
            "request; what ran outside sensed code (framework, server, unsensed libraries) is the remainder. Slowest first.</p>"
            f'{legend}<div class="grid">{"".join(figures)}</div>{more}</section>')


def _diff_tables(d) -> str:
    diff = d.diff
    if diff is None:
        return '<section id="diff"><h2>Regressions</h2><p class="note">No comparison of versions.</p></section>'
    html = [f'<section id="diff"><h2>Regressions ({len(diff.regressions)})</h2>',
            '<p class="note">Significant changes, ranked by the latency they add per request of their route '
            f"({diff.tests_made} changes tested).</p>" + _findings(diff.regressions, "regressions") if diff.regressions
            else '<p class="note">No significant regression.</p>']
    if diff.improvements:
        html += [f"<h2>Improvements ({len(diff.improvements)})</h2>", _findings(diff.improvements, "improvements")]
    if diff.removed_functions:
        rows = [f'<tr><td class="code">{esc(r["function"])}</td><td class="code">{esc(r["route"])}</td></tr>' for r in diff.removed_functions]
        html += [f"<h2>No longer called ({len(rows)})</h2>", _table(["function", "route"], rows, attrs=' id="removed"')]
    return "".join(html) + "</section>"


def _routes(d) -> str:
    order = {v.version: i for i, v in enumerate(d.versions)}
    rows = [f'<tr data-route="{esc(r.route)}" data-version="{esc(r.version)}"><td class="code">{esc(r.route)}</td><td>{esc(r.version)}</td>'
            f"{_cell(r.requests)}{_cell(r.errors)}{_cell(r.error_rate, f'{r.error_rate:.2%}')}{_cell(r.mean_ms, _ms(r.mean_ms))}"
            f"{_cell(r.p50_ms, _ms(r.p50_ms))}{_cell(r.p95_ms, _ms(r.p95_ms))}{_cell(r.p99_ms, _ms(r.p99_ms))}</tr>"
            for r in sorted(d.routes, key=lambda r: (r.route, order.get(r.version, 0)))]
    headers = ["route", "version", "requests", "errors", "error rate", "mean ms", "p50 ms", "p95 ms", "p99 ms"]
    return ('<section id="routes"><h2>Routes</h2><p class="note">Per route and version; click a heading to sort.</p>'
            + _table(headers, rows, attrs=' id="routes-table"') + "</section>")


def _breakdowns(d) -> str:
    by_route: dict[str, list] = {}
    for row in d.functions:
        by_route.setdefault(row.route, []).append(row)
    requests = {r.route: r.requests for r in d.routes if r.version == d.candidate}
    order = sorted(by_route, key=lambda route: (-(requests.get(route) or 0), route))
    figures = []
    for route in order[:24]:
        rows = by_route[route]
        per_request = bool(requests.get(route))
        base = {(r.function, r.kind): r for r in d.baseline_functions if r.route == route}
        table_rows = [f'<tr><td class="code">{esc(r.function)}</td><td>{esc(r.kind)}</td>{_cell(r.calls)}{_cell(r.calls_per_request, _num(r.calls_per_request))}'
                      f"{_cell(r.errors)}{_cell(r.p50_ms, _ms(r.p50_ms))}{_cell(r.p95_ms, _ms(r.p95_ms))}"
                      f"{_cell(r.self_ms_per_request, _ms(r.self_ms_per_request))}{_cell(r.self_ms, _ms(r.self_ms))}</tr>"
                      for r in sorted(rows, key=lambda r: -r.self_ms)]
        table = _table(["function", "kind", "calls", "calls/req", "errors", "p50 ms", "p95 ms", "self ms/req", "self ms"], table_rows)
        what = f"{requests[route]} requests, self time per request" if per_request else "outside requests: total self time"
        figures.append(f'<figure><h3>{esc(route)}</h3><figcaption>{esc(d.candidate)}: {esc(what)}</figcaption>'
                       f"{breakdown(route, rows, base, per_request)}<details><summary>{'all ' if len(rows) > 1 else ''}{len(rows)} function{'s' if len(rows) > 1 else ''}</summary>{table}</details></figure>")
    more = f'<p class="note">{len(order) - 24} more routes are not drawn.</p>' if len(order) > 24 else ""
    legend = (f'<div class="legend"><span><i class="sw bar"></i>self time in {esc(d.candidate)}</span>'
              + (f'<span><i class="sw base"></i>{esc(d.baseline)}</span>' if d.baseline else "") + "</div>")
    return (f'<section id="breakdown"><h2>Where the time goes, per route ({esc(d.candidate)})</h2>{legend}'
            f'<div class="grid">{"".join(figures)}</div>{more}</section>')


def _anomalies(d) -> str:
    if not d.anomalies:
        return f'<section id="anomalies"><h2>Anomalies (0)</h2><p class="note">{wording.NO_ANOMALIES.capitalize()}.</p></section>'
    rows = [f'<tr><td class="code">{esc(a.function)}</td><td class="code">{esc(a.route)}</td><td>{esc(a.version)}</td>'
            f'<td>{esc(wording.anomaly_kind(a))}</td><td>{esc(_time(a.change_at))}</td>'
            f"{_cell(a.before, f'{a.before:.4g}')}{_cell(a.after, f'{a.after:.4g}')}"
            f"{_cell(a.relative_change, '-' if a.relative_change is None else f'{a.relative_change:+.0%}')}{_cell(a.p_value, f'{a.p_value:.1e}')}</tr>"
            for a in d.anomalies]
    return (f'<section id="anomalies"><h2>Anomalies ({len(rows)})</h2><p class="note">Changes of behaviour within a deployment, over time.</p>'
            + _table(["function", "route", "version", "kind", "since", "before", "after", "change", "p"], rows, attrs=' id="anomalies-table"')
            + "</section>")


def _errors(d) -> str:
    if not d.errors:
        return f'<section id="errors"><h2>Errors (0)</h2><p class="note">{wording.NO_EXCEPTIONS.capitalize()}.</p></section>'
    rows = []
    for r in d.errors:
        frames = "".join(f'<li>{esc(f["function"])} <span class="code">({esc(f["file"])}:{esc(f["line"])})</span></li>' for f in r["stack"])
        stack = f'<details><summary>{len(r["stack"])} frames</summary><ol class="stack">{frames}</ol></details>' if frames else "-"
        rows.append(f'<tr><td class="code">{esc(r["exception_type"])}</td><td class="code">{esc(r["function"])}</td><td class="code">{esc(r["route"])}</td>'
                    f'<td>{esc(r["version"])}</td>{_cell(r["count"])}<td>{esc(_time(r["first_seen"]))}</td><td>{esc(_time(r["last_seen"]))}</td>'
                    f'<td class="code">{esc(r["message"]) if r["message"] is not None else "-"}</td>'
                    f'<td class="code">{esc(r["trace_id"] or "-")}</td><td>{stack}</td></tr>')
    headers = ["exception", "function", "route", "version", "count", "first seen", "last seen", "message", "trace id", "stack"]
    return f'<section id="errors"><h2>Errors ({len(rows)})</h2>' + _table(headers, rows, attrs=' id="errors-table"') + "</section>"


def render(d) -> str:
    csp = (f"default-src 'none'; style-src '{_hash(CSS)}'; script-src '{_hash(JS)}'; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    title = f"{d.baseline} \u2192 {d.candidate}" if d.baseline else d.candidate
    body = "".join([_header(d), "<main>", _summary(d), _routes(d), _changes(d), _breakdowns(d), flame.section(d), _diff_tables(d), _anomalies(d),
                    _errors(d), "</main>"])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>funcsight report: {esc(title)}</title>\n'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n<script>{JS}</script>\n</body></html>\n")
