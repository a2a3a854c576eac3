"""The language server: pygls over stdio, answering from a :class:`~funcsight.lsp.evidence.Snapshot`.

* ``textDocument/codeLens``: one lens per sensed function (figures on its busiest route), one more
  per regression of the latest version diff; each opens the HTML report (``funcsight.openReport``).
* ``textDocument/hover`` on a sensed function's header: per-route table, diff findings, the last
  exception's stack sample, moved/edited notes.
* ``textDocument/publishDiagnostics``: a warning per regression on the function's name; one
  information line on a file edited since the recording.
* commands ``funcsight.openReport`` (writes the report with ``funcsight report --html`` in a
  subprocess, then asks the client to show it) and ``funcsight.refresh``.

The snapshot is loaded in a worker thread and replaced whole; requests read whichever snapshot is
current, so they never wait for the store. A poll task reloads when the store file (or its WAL)
changes, then asks the client to refresh lenses (when it supports that) and republishes
diagnostics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from funcsight import __version__
from funcsight.lsp import evidence as evidence_mod
from funcsight.lsp import render
from funcsight.lsp.evidence import Snapshot
from funcsight.lsp.mapping import FileMap, map_file

logger = logging.getLogger("funcsight.lsp")

OPEN_REPORT = "funcsight.openReport"
REFRESH = "funcsight.refresh"
SOURCE = "funcsight"


@dataclass
class Settings:
    db_path: str | None
    source: str | None = None
    baseline: str | None = None
    candidate: str | None = None
    poll_s: float = 2.0


class FuncsightServer(LanguageServer):
    def __init__(self, settings: Settings):
        super().__init__("funcsight", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.settings = settings
        self.snapshot: Snapshot = Snapshot.empty(settings.source or settings.db_path or "", "loading")
        self.generation = 0
        self._maps: dict[str, tuple[tuple, FileMap]] = {}  # uri -> ((doc version, generation), map)
        self._published: set[str] = set()
        self._poller: asyncio.Task | None = None
        self._loading = False
        self._last_problem: str | None = None

    # ------------------------------------------------------------------ loading
    def _signature(self) -> tuple:
        if self.settings.source:
            return (int(time.monotonic() // max(self.settings.poll_s, 30.0)),)  # Prometheus: on a timer
        out = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(self.settings.db_path + suffix)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def load_now(self) -> Snapshot:
        """Read a new snapshot (in the calling thread); a source problem becomes an empty snapshot
        that says why."""
        s = self.settings
        label = s.source or s.db_path or ""
        try:
            return evidence_mod.load(s.source, s.db_path, s.baseline, s.candidate)
        except Exception as err:  # SourceError, AnalysisError, ConfigError: one line to the user
            if not isinstance(err, ValueError) and type(err).__name__ not in ("SourceError",):
                logger.exception("funcsight lsp: loading failed")
            return Snapshot.empty(label, str(err))

    async def reload(self) -> None:
        if self._loading:
            return
        self._loading = True
        try:
            snapshot = await asyncio.to_thread(self.load_now)
        finally:
            self._loading = False
        self.snapshot = snapshot
        self.generation += 1
        self._maps.clear()
        if snapshot.problem and snapshot.problem != self._last_problem:
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=f"funcsight: {snapshot.problem}"))
        self._last_problem = snapshot.problem
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Info, message=self.status()))
        self.publish_all()
        caps = self.client_capabilities.workspace
        if caps and caps.code_lens and caps.code_lens.refresh_support:
            self.workspace_code_lens_refresh(None)

    def status(self) -> str:
        s = self.snapshot
        if s.problem:
            return f"funcsight: {s.label}: {s.problem}"
        compared = f"{s.baseline} -> {s.candidate}" if s.baseline else f"version {s.candidate}"
        return (f"funcsight: loaded {len(s.functions)} functions from {s.label} ({compared}, "
                f"{s.regressions} regressions) in {s.load_seconds:.2f} s, generation {self.generation}")

    async def poll(self) -> None:
        last = None
        while True:
            signature = self._signature()
            if signature != last:
                last = signature
                await self.reload()
                last = self._signature()  # what was read (a write during the load is seen next round)
            await asyncio.sleep(self.settings.poll_s)

    # ------------------------------------------------------------------ mapping
    def file_map(self, uri: str) -> FileMap | None:
        try:
            document = self.workspace.get_text_document(uri)
            source = document.source
        except Exception:
            return None
        path = to_fs_path(uri) or uri
        key = (document.version, self.generation)
        cached = self._maps.get(uri)
        if cached is not None and cached[0] == key:
            return cached[1]
        file_map = map_file(source, path, self.snapshot.recorded, self.snapshot.by_module)
        self._maps[uri] = (key, file_map)
        return file_map

    def diagnostics(self, uri: str) -> list[types.Diagnostic]:
        file_map = self.file_map(uri)
        snap = self.snapshot
        if file_map is None or snap.candidate is None:
            return []
        out = []
        for match in file_map.matches:
            evidence = snap.functions.get(match.function)
            if not evidence or not snap.baseline:
                continue
            for finding in evidence.regressions:
                out.append(types.Diagnostic(
                    range=_name_range(match),
                    message=render.diagnostic_message(finding, snap.baseline, snap.candidate),
                    severity=types.DiagnosticSeverity.Warning,
                    source=SOURCE,
                    code=finding.change,
                ))
        note = render.file_note(file_map, snap.candidate)
        if note:
            out.append(types.Diagnostic(
                range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)),
                message=note, severity=types.DiagnosticSeverity.Information, source=SOURCE, code="edited-since-recorded",
            ))
        return out

    def publish(self, uri: str) -> None:
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=self.diagnostics(uri)))

    def publish_all(self) -> None:
        for uri in list(self.workspace.text_documents):
            self.publish(uri)

    # ------------------------------------------------------------------ answers
    def code_lenses(self, uri: str) -> list[types.CodeLens]:
        file_map = self.file_map(uri)
        snap = self.snapshot
        if file_map is None or snap.candidate is None:
            return []
        lenses = []
        for match in file_map.matches:
            evidence = snap.functions.get(match.function)
            where = types.Range(start=types.Position(line=match.definition.line, character=0), end=types.Position(line=match.definition.line, character=0))
            if evidence is None:  # recorded in another version only
                title = f"{snap.candidate}: not called (ran in {match.recorded.version})"
                lenses.append(types.CodeLens(range=where, command=types.Command(title=title, command=OPEN_REPORT,
                                                                                arguments=[match.function])))
                continue
            title = render.lens_title(evidence, snap.candidate)
            if match.edited:
                title += f" · edited since {snap.candidate}"
            lenses.append(types.CodeLens(range=where, command=types.Command(title=title, command=OPEN_REPORT, arguments=[match.function])))
            if snap.baseline:
                for finding in evidence.regressions[:2]:
                    lenses.append(types.CodeLens(range=where, command=types.Command(
                        title=render.finding_title(finding, snap.baseline, snap.candidate), command=OPEN_REPORT,
                        arguments=[match.function])))
        return lenses

    def hover(self, uri: str, position: types.Position) -> types.Hover | None:
        file_map = self.file_map(uri)
        if file_map is None:
            return None
        match = file_map.at(position.line)
        if match is None:
            return None
        text = render.hover_markdown(self.snapshot.functions.get(match.function), match, self.snapshot)
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text), range=_name_range(match))

    def open_report(self, function: str | None) -> str:
        """Write the HTML report for the store being shown and ask the client to open it."""
        s = self.settings
        out = os.path.join(tempfile.gettempdir(), f"funcsight-report-{os.getpid()}.html")
        cmd = [sys.executable, "-m", "funcsight.report", "--html", out]
        cmd += ["--source", s.source] if s.source else ["--db", s.db_path or ""]
        if self.snapshot.baseline:
            cmd += ["--baseline", self.snapshot.baseline]
        if self.snapshot.candidate:
            cmd += ["--candidate", self.snapshot.candidate]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["report failed"])[-1]
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=message))
            return message
        uri = from_fs_path(out) or out
        caps = self.client_capabilities.window
        if caps and caps.show_document and caps.show_document.support:
            self.window_show_document(types.ShowDocumentParams(uri=uri, external=True))
        else:
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=f"funcsight report: {out}"))
        return out


def _name_range(match) -> types.Range:
    d = match.definition
    return types.Range(start=types.Position(line=d.line, character=d.name_start), end=types.Position(line=d.line, character=d.name_end))


def build_server(settings: Settings) -> FuncsightServer:
    server = FuncsightServer(settings)

    @server.feature(types.INITIALIZED)
    async def initialized(ls: FuncsightServer, params: types.InitializedParams) -> None:
        ls._poller = asyncio.get_running_loop().create_task(ls.poll())

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: FuncsightServer, params=None) -> None:
        if ls._poller is not None:
            ls._poller.cancel()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: FuncsightServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: FuncsightServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: FuncsightServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: FuncsightServer, params: types.DidCloseTextDocumentParams) -> None:
        ls._maps.pop(params.text_document.uri, None)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS, types.CodeLensOptions(resolve_provider=False))
    def code_lens(ls: FuncsightServer, params: types.CodeLensParams) -> list[types.CodeLens]:
        return ls.code_lenses(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: FuncsightServer, params: types.HoverParams) -> types.Hover | None:
        return ls.hover(params.text_document.uri, params.position)

    @server.command(OPEN_REPORT)
    async def open_report(ls: FuncsightServer, *args) -> str:
        return await asyncio.to_thread(ls.open_report, str(args[0]) if args else None)

    @server.command(REFRESH)
    async def refresh(ls: FuncsightServer, *args) -> str:
        await ls.reload()
        return ls.status()

    return server


def serve(settings: Settings) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    print(f"funcsight lsp: serving {settings.source or settings.db_path} over stdio", file=sys.stderr, flush=True)
    build_server(settings).start_io()
    return 0


__all__ = ["FuncsightServer", "Settings", "build_server", "serve", "OPEN_REPORT", "REFRESH"]
