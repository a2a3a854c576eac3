"""A version named by a short git revision (issue 16): ``git log --oneline`` prints 7 hex digits,
the store records 12; the CLI's ``--version/--baseline/--candidate``, the report and every MCP
version argument take a unique prefix (or the full 40-digit revision) for the version it names,
and a prefix of several versions is one line listing them. Real store files, the installed
``funcsight`` command and the MCP SDK's real stdio client."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import cli_json, run_cli, write_versions_store

ONE, TWIN_A, TWIN_B = "8b7e6d5c4b3a", "3f9a2c1d4e5b", "3f9a2c1aa000"  # the twins share 7 digits


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prefix") / "funcsight.db"
    write_versions_store(path, [TWIN_A, TWIN_B, ONE])
    return str(path)


def one_error_line(done) -> str:
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("funcsight: error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("given", [ONE[:7], ONE[:9].upper(), ONE + "f00dfeed" * 3 + "0000", ONE])
def test_cli_takes_a_unique_prefix_or_the_full_revision(store, given):
    rows = cli_json("routes", "--db", store, "--version", given)
    assert [(r["route"], r["version"], r["requests"]) for r in rows] == [("/index", ONE, 1)]
    functions = cli_json("functions", "--db", store, "--version", given)
    assert {r["version"] for r in functions} == {ONE}


def test_cli_names_the_versions_an_ambiguous_prefix_matches(store):
    line = one_error_line(run_cli("functions", "--db", store, "--version", TWIN_A[:7]))
    assert f"version '{TWIN_A[:7]}' is ambiguous" in line and repr(TWIN_A) in line and repr(TWIN_B) in line, line
    assert repr(ONE) not in line
    # one more digit tells the twins apart
    assert {r["version"] for r in cli_json("functions", "--db", store, "--version", TWIN_A[:8])} == {TWIN_A}


@pytest.mark.parametrize("given", ["3f9a2c", "zzzzzzz", "1234567"])  # too short to be a revision, not hex, no match
def test_cli_anything_else_is_an_unknown_version(store, given):
    line = one_error_line(run_cli("routes", "--db", store, "--version", given))
    assert f"unknown version '{given}'" in line and repr(ONE) in line, line


def test_diff_and_explain_resolve_both_sides_before_comparing(store):
    found = cli_json("diff", "--db", store, "--baseline", TWIN_A[:8], "--candidate", ONE[:7])
    assert (found["baseline"], found["candidate"]) == (TWIN_A, ONE)
    for command in (["diff"], ["explain", "--route", "/index"]):
        line = one_error_line(run_cli(*command, "--db", store, "--baseline", ONE[:7], "--candidate", ONE))
        assert "same version" in line, line


def test_report_takes_prefixes(store, tmp_path):
    html = tmp_path / "r.html"
    done = run_cli("report", "--db", store, "--html", str(html), "--baseline", TWIN_B[:8], "--candidate", ONE[:7])
    assert done.returncode == 0, done.stderr
    assert f"{TWIN_B} -> {ONE}" in done.stdout, done.stdout


def test_mcp_version_arguments_take_prefixes(store, tmp_path):
    pytest.importorskip("mcp")
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def main():
        params = StdioServerParameters(command=sys.executable, args=["-m", "funcsight.cli.main", "mcp", "--db", store])
        with open(tmp_path / "err.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                calls = [
                    ("list_routes", {"version": ONE[:7]}),
                    ("route_breakdown", {"route": "/index", "version": ONE[:7]}),
                    ("compare_versions", {"baseline": TWIN_A[:8], "candidate": ONE[:7]}),
                    ("call_tree", {"route": "/index", "baseline": TWIN_A[:8], "candidate": ONE[:7]}),
                    ("list_routes", {"version": TWIN_A[:7]}),
                    ("explain_route_change", {"route": "/index", "baseline": ONE[:7], "candidate": ONE}),
                ]
                return [await session.call_tool(name, arguments) for name, arguments in calls]

    routes, breakdown, compared, tree, ambiguous, same = anyio.run(main)
    assert not routes.is_error and [(r["route"], r["version"]) for r in routes.structured_content["routes"]] == [("/index", ONE)]
    assert routes.structured_content["version"] == ONE
    assert not breakdown.is_error and breakdown.structured_content["version"] == ONE
    assert not compared.is_error and (compared.structured_content["baseline"], compared.structured_content["candidate"]) == (TWIN_A, ONE)
    # this store has no call paths: the refusal names the version the prefix resolved to
    assert tree.is_error and f"no call paths recorded for route '/index' in version {TWIN_A!r}" in tree.content[0].text
    assert ambiguous.is_error and "ambiguous" in ambiguous.content[0].text and repr(TWIN_B) in ambiguous.content[0].text
    assert same.is_error and "same version" in same.content[0].text
    assert "Traceback" not in (tmp_path / "err.log").read_text()
