"""What the ``store_health`` tool returns: whether the recorded data is complete, in the style of
:mod:`funcsight.mcp_server.models` (units in the field names, application text JSON-quoted in the
summary, cuts stated). The verdict's sentences are the CLI's (``funcsight status``), from
:func:`funcsight.analysis.wording.health_lines`."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import Field

from funcsight.analysis import wording
from funcsight.mcp_server.models import DATA_NOTE, Output, q, record_model, utc
from funcsight.sources.store_health import ProcessHealth, StoreHealth

ProcessEntry = record_model(
    "ProcessEntry", ProcessHealth,
    rename={"started_at": "started_at_epoch_s", "last_write": "last_write_epoch_s"},
    describe={
        "instance_id": "service.instance.id of the process (a forked worker has its own)",
        "windows": "export windows the process wrote to the store",
        "last_write_epoch_s": "end of the process's last window, Unix seconds (null: none written)",
        "dropped": "reason -> count, non-zero only (see the tool description for the reasons)",
        "internal_errors": "component (sensor, processor, exporter) -> failures, non-zero only",
    },
    extra={"last_write_utc": (str | None, None)},
)


class StoreHealthResult(Output):
    store: str = Field(description="the store file")
    schema_version: int
    complete: bool = Field(description="true when nothing was dropped, folded or failed and every counter is recorded")
    windows: int = Field(description="export windows written, all processes")
    processes_total: int
    first_window_epoch_s: float | None
    last_write_epoch_s: float | None = Field(description="end of the last window any process wrote, Unix seconds")
    last_write_utc: str | None
    dropped: dict[str, int] = Field(description="reason -> count over the store, non-zero only")
    internal_errors: dict[str, int] = Field(description="component -> failures over the store, non-zero only")
    overflow_calls: int = Field(description="calls counted under the (overflow) functions: code past FUNCSIGHT_MAX_FUNCTIONS")
    overflow_requests: int = Field(description="requests counted under the (overflow) route: FUNCSIGHT_MAX_ROUTES")
    not_recorded: list[str] = Field(description="counters this store has no column for (written by an older funcsight)")
    processes: list[ProcessEntry] = Field(description="the most recent writers first")
    omitted: int = Field(description="processes left out by the limit")
    note: str | None = None

    @classmethod
    def from_health(cls, health: StoreHealth, note: str | None = None) -> StoreHealthResult:
        return cls(
            store=health.path, schema_version=health.schema, complete=health.complete, windows=health.windows,
            processes_total=health.processes_total, first_window_epoch_s=health.first_window,
            last_write_epoch_s=health.last_write, last_write_utc=utc(health.last_write), dropped=health.dropped,
            internal_errors=health.internal_errors, overflow_calls=health.overflow_calls,
            overflow_requests=health.overflow_requests, not_recorded=health.not_recorded,
            processes=[ProcessEntry.from_record(p, last_write_utc=utc(p.last_write)) for p in health.processes],
            omitted=health.processes_total - len(health.processes), note=note,
        )

    def summary(self) -> str:
        verdict = wording.health_lines(SimpleNamespace(
            path=self.store, schema=self.schema_version, windows=self.windows, processes_total=self.processes_total,
            first_window=self.first_window_epoch_s, last_write=self.last_write_epoch_s, complete=self.complete,
            dropped=self.dropped, internal_errors=self.internal_errors, overflow_calls=self.overflow_calls,
            overflow_requests=self.overflow_requests, not_recorded=self.not_recorded,
        ), q)
        body = [
            f"- {q(p.service)} version {q(p.version)} pid {p.pid} instance {q(p.instance_id)}: {p.windows} windows, "
            f"last write {p.last_write_utc or 'never'}"
            + (f", dropped {p.dropped}" if p.dropped else "") + (f", internal errors {p.internal_errors}" if p.internal_errors else "")
            for p in self.processes
        ]
        return "\n".join([*verdict, *body, *([f"NOTE: {self.note}"] if self.note else []), DATA_NOTE])
