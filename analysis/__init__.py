"""Analysis: pure functions over a :class:`funcsight.sources.Source`, returning plain records.

* ``breakdown``: per function x route x version and per route figures (``functions``, ``routes``);
  :class:`~funcsight.analysis.breakdown.AnalysisError` for questions the data cannot answer;
* ``compare``: the version diff and the per-route explanation of a latency change;
* ``anomalies``: changes of behaviour over time within one version;
* ``errors``: exception forensics;
* ``stats``: the statistical tests (stdlib only);
* ``wording``: the text every face uses for these results ("before -> after", headlines, times).

May import: the standard library, funcsight core (``funcsight.histogram``, ...) and
``funcsight.sources`` (its protocol, records and errors). Never OpenTelemetry, the sensor, the
write side, sqlite3, click, the MCP SDK or a face (cli, mcp_server, report).
"""
