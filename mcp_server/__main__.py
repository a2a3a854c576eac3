"""``python -m funcsight.mcp_server [--db PATH] [--transport stdio|http] [--port N]``: the same as
``funcsight mcp``, for MCP client configurations that name an interpreter rather than a script."""

from __future__ import annotations

import argparse
import sys

from funcsight.mcp_server.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m funcsight.mcp_server", description="funcsight MCP server")
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
