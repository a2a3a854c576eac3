"""A real editor: Neovim (Debian ``neovim``, headless) with its built-in LSP client, configured by
``editors/neovim/funcsight.lua`` as the README shows, attached to ``funcsight lsp`` on the demo
store; a hover is requested on a sensed function and the reply's text checked, and the CodeLens
Neovim got for the file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lsp_support import FUNCSIGHT, cli_json, def_line, demo_store, write_shop

from helpers import clean_env

ROOT = Path(__file__).resolve().parent.parent
NEOVIM_LUA = ROOT / "editors" / "neovim" / "funcsight.lua"

SCRIPT = r"""
vim.cmd("filetype on")
local funcsight = dofile(%(lua)s)
funcsight.setup({ funcsight = %(funcsight)s, db = %(db)s, root_dir = %(root)s })
vim.cmd("edit " .. vim.fn.fnameescape(%(file)s))
local bufnr = vim.api.nvim_get_current_buf()
local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) }, position = { line = %(line)d, character = 5 } }
local hover = nil
vim.wait(60000, function()
  local replies = vim.lsp.buf_request_sync(bufnr, "textDocument/hover", params, 2000)
  for _, reply in pairs(replies or {}) do
    if reply.result and reply.result.contents then
      hover = reply.result.contents.value
      return true
    end
  end
  return false
end, 200)
local titles = {}
vim.lsp.codelens.refresh()
vim.wait(10000, function() return #vim.lsp.codelens.get(bufnr) > 0 end, 100)
for _, lens in ipairs(vim.lsp.codelens.get(bufnr)) do
  table.insert(titles, { line = lens.range.start.line, title = lens.command and lens.command.title or "" })
end
local out = io.open(%(out)s, "w")
out:write(vim.fn.json_encode({ hover = hover or vim.NIL, lenses = titles }))
out:close()
vim.cmd("qa!")
"""


def _lua(text: str) -> str:
    return json.dumps(str(text))  # a JSON string is a valid Lua string literal for these paths


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory)


def test_neovim_hover_on_a_sensed_function(store, tmp_path):
    nvim = shutil.which("nvim")
    if nvim is None:
        if os.environ.get("CI"):
            pytest.fail("nvim missing: .ci/run installs Debian neovim")
        pytest.skip("nvim not installed (apt-get install neovim)")
    shop = write_shop(tmp_path / "checkout")
    path = shop / "shop" / "cart.py"
    line = def_line(path.read_text(), "total")
    out = tmp_path / "reply.json"
    script = tmp_path / "test.lua"
    script.write_text(SCRIPT % {
        "lua": _lua(NEOVIM_LUA), "funcsight": _lua(FUNCSIGHT), "db": _lua(store), "root": _lua(shop),
        "file": _lua(path), "line": line, "out": _lua(out),
    })
    env = clean_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
                    XDG_STATE_HOME=str(tmp_path / "state"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([nvim, "--headless", "--clean", "-n", "-c", f"luafile {script}"], cwd=shop, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.exists(), f"nvim wrote no reply (status {done.returncode}):\n{done.stdout}\n{done.stderr}"
    reply = json.loads(out.read_text())

    rows = [r for r in cli_json("functions", "--db", str(store), "--version", "1.1") if r["function"] == "shop.cart.total"]
    assert rows
    hover = reply["hover"]
    assert isinstance(hover, str), reply
    assert hover.startswith("**shop.cart.total** · funcsight, version 1.1 (diff against 1.0)")
    for row in rows:
        assert (f"| `{row['route']}` | {row['calls_per_request']:g} | {row['total_ms'] / row['requests']:.3f} | "
                f"{row['p50_ms']:.3f} | {row['p95_ms']:.3f} |") in hover
    titles = {lens["line"]: lens["title"] for lens in reply["lenses"]}
    busiest = sorted(rows, key=lambda r: (-r["calls"], r["route"]))[0]
    assert titles[line].startswith(f"1.1: {busiest['calls_per_request']:g} calls/req · "
                                   f"{busiest['total_ms'] / busiest['requests']:.3f} ms/req on {busiest['route']}")
    assert def_line(path.read_text(), "load_items") in titles
