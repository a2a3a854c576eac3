"""``funcsight lsp``: the language server over stdio (see :mod:`funcsight.lsp`).

``add_command(subparsers)`` adds the subcommand to the ``funcsight`` parser; ``run(args)`` runs it.
This module imports neither pygls nor the CLI, so ``funcsight`` starts (and every other command
works) without the ``lsp`` extra; ``funcsight lsp`` then says how to install it.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_USAGE = 2


def add_command(subparsers) -> argparse.ArgumentParser:
    """Add ``lsp`` to the ``funcsight`` sub-commands (the object ``add_subparsers()`` returned)."""
    parser = subparsers.add_parser(
        "lsp",
        help="language server over stdio: CodeLens, hover and diagnostics with the store's evidence in your editor",
        description="Serve the store's function-level evidence to an editor (Language Server Protocol over stdio): "
                    "a CodeLens above every sensed function, a hover with its routes and last exception, "
                    "a warning on each regression of the latest version diff. The store is only read.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=None, help="store file (default: $FUNCSIGHT_DB or ./funcsight.db)")
    parser.add_argument("--source", default=None, help="read from prometheus+http://HOST:PORT instead of the store")
    parser.add_argument("--baseline", default=None, help="the earlier version (default: the one seen before the candidate)")
    parser.add_argument("--candidate", default=None, help="the version shown (default: the latest seen)")
    parser.add_argument("--poll", type=_seconds, default=2.0, metavar="SECONDS",
                        help="how often to look for new windows in the store (default 2)")
    parser.add_argument("--stdio", action="store_true", help="accepted for editors that pass it; stdio is the only transport")
    parser.set_defaults(run=run)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0.05 and 3600 seconds")
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
    source = args.source or None
    if source is not None:
        from funcsight.sources import PROMETHEUS_SCHEMES

        if not source.startswith(PROMETHEUS_SCHEMES):
            return _fail(f"unknown source {source!r}: use prometheus+http://HOST:PORT, or --db PATH for the embedded store")
    try:
        from funcsight.lsp.server import Settings, serve
    except ImportError as err:
        from funcsight.install import install_hint

        return _fail(f"`funcsight lsp` needs pygls and lsprotocol ({err.name or err} is missing): {install_hint('lsp')}")
    # A missing store is not fatal: an editor often starts the server before any app has written;
    # the server says why it shows nothing and picks the store up when it appears.
    return serve(Settings(db_path=db_path, source=source, baseline=args.baseline, candidate=args.candidate, poll_s=args.poll))


def main(argv: list[str] | None = None) -> int:
    """``python -m funcsight.lsp``: the same command without the ``funcsight`` parser."""
    parser = argparse.ArgumentParser(prog="funcsight lsp")
    add_arguments(parser)
    return run(parser.parse_args(argv))
