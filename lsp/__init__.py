"""funcsight in the editor: a language server (``funcsight lsp``) that puts the store's runtime
evidence next to the code that produced it.

Usage::

    funcsight lsp [--db PATH | --source prometheus+http://HOST:PORT] [--baseline A] [--candidate B] [--poll S]

It speaks the Language Server Protocol over stdin/stdout (pygls + lsprotocol, the ``lsp`` extra)
and, for every Python file the editor opens:

* a **CodeLens** above each sensed function: calls and ms per request on its busiest route, p95,
  the number of routes it serves and its exceptions by type, in the shown version (``--candidate``,
  default the latest); one more lens per regression of the diff against ``--baseline`` (default the
  version before), worded as ``funcsight diff`` words it;
* a **hover** on its header: a per-route table, the diff's findings, the last exception's stack
  sample, and whether it moved or was edited since it was recorded;
* **diagnostics**: a warning on each function with a regression, an information line on a file
  changed since the recording;
* commands ``funcsight.openReport`` (the HTML report, opened by the client) and ``funcsight.refresh``.

A function is found by its recorded ``module.qualname`` in the re-parsed file (so it is still found
after it moved), its code hash tells an edited function from a moved one (:mod:`.mapping`). The
store is only read, through :mod:`funcsight.sources`; the server reloads when the store changes.

May import: the standard library, pygls/lsprotocol, funcsight core, ``funcsight.analysis`` and
``funcsight.sources``. Never OpenTelemetry, the sensor, the write side or another face.
"""
