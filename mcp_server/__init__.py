"""The MCP server: funcsight's runtime evidence for AI agents.

``funcsight mcp [--db PATH] [--transport stdio|http] [--port N]`` serves the store over the Model
Context Protocol with the official ``mcp`` SDK (``pip install '/path/to/funcsight[mcp]'`` from a checkout). Tools (names
fixed: agents are configured against them), each read-only, with typed parameters, an output
schema (units in the field names) and a text summary:

``list_versions``, ``list_routes``, ``route_breakdown``, ``function_stats``, ``compare_versions``,
``explain_route_change``, ``list_anomalies``, ``recent_errors`` and ``query`` (read-only SQL over
documented views, bounded in rows and time).

Modules: ``cli`` (the subcommand, which :mod:`funcsight.cli` registers; imports neither the SDK nor
the CLI), ``server`` (``build_server(db_path)``), ``tools`` (the tools over
:mod:`funcsight.analysis`), ``models`` (their outputs, derived from the analysis records; sentences
from :mod:`funcsight.analysis.wording`), ``sql`` (the ``query`` tool's limits over
:func:`funcsight.sources.store.connect_for_queries`).

May import: funcsight core, :mod:`funcsight.sources`, :mod:`funcsight.analysis` and the ``mcp``
SDK. Never the CLI, the report or the write side; only the CLI imports this package (``cli``).
"""
