"""Chooses the sensor once, at instrumentation time.

* Python 3.12+: ``sys.monitoring`` callbacks (C when the extension is built, else Python).
* Python 3.11: functions rewritten at import time to call the sensor's enter/leave hooks
  (:mod:`funcsight.instrumentation.rewrite`); a C profile hook would also fire for every framework
  call, which costs far more than the application's own functions. The hooks are the C core's
  when the extension is built.

``FUNCSIGHT_IMPLEMENTATION`` (``config.implementation``): ``auto`` uses C when the extension
imports, else Python (said once, at info level); ``c`` does the same but warns when it falls back;
``python`` always uses the pure-Python sensor.
"""

from __future__ import annotations

import logging
import sys

from funcsight.config import Config
from funcsight.instrumentation import csensor
from funcsight.instrumentation._pysensor import PythonSensor
from funcsight.instrumentation.calls import stack_sample
from funcsight.instrumentation.paths import MAX_NODES as MAX_PATH_NODES
from funcsight.instrumentation.paths import PathRegistry
from funcsight.instrumentation.registry import FunctionRegistry
from funcsight.instrumentation.selection import CodeSelector

_log = logging.getLogger("funcsight")
HAS_MONITORING = hasattr(sys, "monitoring")
_fallback_reported = False


class RewritingSensor:
    """Python 3.11 front end: a core (C or Python) fed by rewritten code."""

    def __init__(self, core: PythonSensor, selector: CodeSelector):
        from funcsight.instrumentation.rewrite import ImportRewriter

        self.core = core
        self.sink = core.sink
        self.paths = core.paths
        self.current_node = core.current_node
        self.set_base_node = core.set_base_node
        self.sweep_parked = core.sweep_parked
        self.take_enclosed, self.hold, self.take_all_held = core.take_enclosed, core.hold, core.take_all_held
        self.rewriter = ImportRewriter(core, selector)  # takes a C core's own hooks (rewrite_hooks)

    @property
    def implementation(self) -> str:
        return f"{self.core.implementation}-rewrite"

    @property
    def internal_errors(self) -> int:
        return self.core.internal_errors

    def start(self) -> None:
        self.rewriter.install()

    def stop(self) -> None:
        self.rewriter.uninstall()


def make_core(choice: str, registry: FunctionRegistry, selector: CodeSelector, slow_ns: int = 50_000_000,
              sample_error=stack_sample, max_path_depth: int = 64) -> PythonSensor:
    """The C core unless ``choice`` is ``python`` or the extension cannot be used. The core makes
    the sink it feeds (``core.sink``), with its own table type."""
    global _fallback_reported
    if choice != "python":
        reason, log = csensor.UNAVAILABLE, _log.warning if choice == "c" else _log.info
        if csensor.available():
            try:
                paths = csensor.PathRegistry(MAX_PATH_NODES, max_path_depth)
                return csensor.CSensor(registry, selector, slow_ns, sample_error, paths)
            except Exception as err:  # e.g. no pthread key left: something is wrong, say so
                reason, log = f"the C sensor could not start ({err})", _log.warning
        if not _fallback_reported:
            _fallback_reported = True
            log("funcsight: using the Python sensor: %s", reason)
    return PythonSensor(registry, selector, slow_ns, sample_error, PathRegistry(MAX_PATH_NODES, max_path_depth))


def make_sensor(config: Config, registry: FunctionRegistry, selector: CodeSelector, sample_error=stack_sample):
    """The sensor ``config`` asks for; ``sensor.sink`` is where its calls go."""
    core = make_core(config.implementation, registry, selector, int(config.slow_call_ms * 1_000_000), sample_error,
                     config.max_path_depth)
    if selector.package_patterns():  # e.g. +flask: code around the request's span is sensed
        core.expect_enclosures()
    if HAS_MONITORING:
        return core
    return RewritingSensor(core, selector)
