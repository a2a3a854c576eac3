"""The ``funcsight`` command: thin argparse commands over :mod:`funcsight.sources` and
:mod:`funcsight.analysis` (``main``), tables and JSON (``output``). Library errors
(``SourceError``, ``AnalysisError``, ``ReportError``, ``ConfigError``) become one line on stderr
and exit status 2 here, only here.

May import: funcsight core, sources, analysis, the demo, and the ``add_command`` hooks of
:mod:`funcsight.mcp_server.cli` and :mod:`funcsight.report.cli` (the one direction between faces:
the CLI registers their subcommands; they never import the CLI). Never the write side.
"""
