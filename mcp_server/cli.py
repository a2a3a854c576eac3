"""``funcsight mcp``: serve the store (or, with ``--source prometheus+http://HOST:PORT``, a
Prometheus server's funcsight metrics) to AI agents over the Model Context Protocol.

``add_command(subparsers)`` adds the subcommand to the ``funcsight`` parser; ``run(args)`` runs it.
This module imports neither the MCP SDK nor the CLI, so ``funcsight`` starts (and every other
command works) without the ``mcp`` extra; ``funcsight mcp`` then says how to install it.

* ``--transport stdio`` (default): the MCP client starts ``funcsight mcp`` and talks over its
  stdin/stdout; nothing else is ever written to stdout.
* ``--transport http``: streamable HTTP at ``http://127.0.0.1:PORT/mcp``, bound to the loopback
  interface only, and every request must carry ``Authorization: Bearer <token>``: the token comes
  from :data:`FUNCSIGHT_MCP_TOKEN`, or is generated at start and printed to stderr.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys

FUNCSIGHT_MCP_TOKEN = "FUNCSIGHT_MCP_TOKEN"
"""Bearer token the HTTP transport requires, e.g. ``FUNCSIGHT_MCP_TOKEN=$(openssl rand -hex 32)``.
Unset: a random token is generated at each start and printed to stderr."""

HOST = "127.0.0.1"  # deliberately not configurable: the store's evidence stays on this machine
DEFAULT_PORT = 8765
MIN_TOKEN_CHARS = 16
EXIT_USAGE = 2


def add_command(subparsers) -> argparse.ArgumentParser:
    """Add ``mcp`` to the ``funcsight`` sub-commands (the object ``add_subparsers()`` returned)."""
    parser = subparsers.add_parser(
        "mcp",
        help="serve the store to AI agents over the Model Context Protocol (stdio or local HTTP)",
        description="Serve the store's function-level runtime evidence to AI agents (MCP). "
                    f"HTTP listens on {HOST} only and requires a bearer token (${FUNCSIGHT_MCP_TOKEN}, or one is generated).",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    parser.add_argument("--source", default=None,
                        help="read from prometheus+http://HOST:PORT instead of the store (the query tool then refuses: no SQL)")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                        help="stdio (default; the MCP client starts this command) or http (streamable HTTP on 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=None, help=f"HTTP port on {HOST} (default {DEFAULT_PORT}; http only)")
    parser.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return value


def _fail(message: str) -> int:
    print(f"funcsight: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    try:
        from funcsight.sources.store import default_db_path

        db_path = os.path.abspath(args.db or default_db_path())
    except ValueError as err:  # funcsight.config.ConfigError
        return _fail(str(err))
    if args.transport == "stdio" and args.port is not None:
        return _fail("--port only applies to --transport http")
    try:
        import anyio

        from funcsight.mcp_server.server import build_server
    except ImportError as err:
        from funcsight.install import install_hint

        return _fail(f"`funcsight mcp` needs the MCP SDK ({err.name or err} is missing): {install_hint('mcp')}")

    source = getattr(args, "source", None) or None
    if source is not None:
        problem = _check_source(db_path, source)
        if problem:
            return _fail(problem)
    else:
        _check_store(db_path)
    serving = source or db_path
    if args.transport == "stdio":
        server = build_server(db_path, source=source)
        print(f"funcsight mcp: serving {serving} over stdio", file=sys.stderr)
        anyio.run(server.run_stdio_async)
        return 0

    port = args.port or DEFAULT_PORT
    token = os.environ.get(FUNCSIGHT_MCP_TOKEN, "").strip()
    generated = not token
    if generated:
        token = secrets.token_urlsafe(32)
    elif len(token) < MIN_TOKEN_CHARS:
        return _fail(f"${FUNCSIGHT_MCP_TOKEN} is too short to be a secret: use at least {MIN_TOKEN_CHARS} characters")
    problem = _port_problem(port)
    if problem:
        return _fail(f"cannot listen on {HOST}:{port} ({problem}): pick another --port")
    server = build_server(db_path, bearer_token=token, source=source)
    url = f"http://{HOST}:{port}/mcp"
    print(f"funcsight mcp: serving {serving} over streamable HTTP at {url} (loopback only)", file=sys.stderr)
    if generated:
        print(f"funcsight mcp: bearer token (generated; set ${FUNCSIGHT_MCP_TOKEN} to choose one): {token}", file=sys.stderr)
    else:
        print(f"funcsight mcp: bearer token from ${FUNCSIGHT_MCP_TOKEN}", file=sys.stderr)
    print("funcsight mcp: clients send the header 'Authorization: Bearer <token>'", file=sys.stderr, flush=True)
    anyio.run(lambda: server.run_streamable_http_async(host=HOST, port=port))
    return 0


def _check_store(db_path: str) -> None:
    """Say at start when the store cannot be read; keep serving (an MCP client often starts the
    server before any app has written), every tool then returns the same one-line reason."""
    from funcsight.sources import SourceError
    from funcsight.sources.store import check_readable

    try:
        check_readable(db_path)
    except SourceError as err:
        print(f"funcsight mcp: warning: {err}; tools will report this until the store can be read", file=sys.stderr)


def _check_source(db_path: str, source: str) -> str | None:
    """A malformed ``--source`` is a usage error (returned); an unreachable server only a warning
    (as for the store: tools report it until the server answers)."""
    from funcsight.sources import SourceError, open_source

    try:
        opened = open_source(source, db_path=db_path)
    except SourceError as err:
        return str(err)
    try:
        ping = getattr(opened, "ping", None)
        if ping is not None:
            ping()
    except SourceError as err:
        print(f"funcsight mcp: warning: {err}; tools will report this until it answers", file=sys.stderr)
    finally:
        opened.close()
    return None


def _port_problem(port: int) -> str | None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        probe.bind((HOST, port))
    except OSError as err:
        return err.strerror or str(err)
    finally:
        probe.close()
    return None
