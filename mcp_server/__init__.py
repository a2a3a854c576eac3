"""The MCP server: funcsight's runtime evidence for AI agents.

``funcsight mcp [--db PATH] [--transport stdio|http] [--port N]`` serves the store over the Model
Context Protocol with the official ``mcp`` SDK (``pip install 'funcsight[mcp]'``). Tools (names
fixed: agents are configured against them), each read-only, with typed parameters, an output
schema (units in the field names) and a text summary:

``list_versions``, ``list_routes``, ``route_breakdown``, ``function_stats``, ``compare_versions``,
``explain_route_change``, ``list_anomalies``, ``recent_errors`` and ``query`` (read-only SQL over
documented views, bounded in rows and time).

Modules: ``cli`` (the subcommand; imports neither the SDK nor the CLI), ``server``
(``build_server(db_path)``), ``tools`` (the tools over :mod:`funcsight.analysis`), ``models``
(their outputs), ``sql`` (the ``query`` engine). Nothing imports this package; it imports
analysis and store only.
"""
