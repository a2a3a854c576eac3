"""Screenshot of funcsight's CodeLens in Neovim: the sample shop's ``pricing.py`` opened in a real
Neovim (built-in LSP client, ``funcsight.lua``) inside a tmux pane attached to ``funcsight lsp`` on a
demo store; the pane is captured with its colours (``tmux capture-pane -e``), turned into HTML and
photographed by headless Chromium.

    python editors/neovim/screenshot.py [--db DEMO_DB] [--out docs/lsp-neovim-codelens.png]

Needs tmux, nvim and chromium (Debian packages) and ``funcsight`` with the ``lsp`` extra.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COLS, ROWS = 150, 34
BASE16 = ["#1e1e1e", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
          "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff"]
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def _xterm(n: int) -> str:
    if n < 16:
        return BASE16[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return "#%02x%02x%02x" % (steps[n // 36], steps[n // 6 % 6], steps[n % 6])
    level = 8 + (n - 232) * 10
    return "#%02x%02x%02x" % (level, level, level)


def ansi_to_html(text: str) -> str:
    """The SGR colours and bold of a ``tmux capture-pane -e`` capture as HTML spans."""
    out, fg, bg, bold, pos = [], None, None, False, 0

    def emit(chunk: str) -> None:
        if not chunk:
            return
        style = []
        if fg:
            style.append(f"color:{fg}")
        if bg:
            style.append(f"background:{bg}")
        if bold:
            style.append("font-weight:bold")
        escaped = html.escape(chunk)
        out.append(f'<span style="{";".join(style)}">{escaped}</span>' if style else escaped)

    for m in SGR.finditer(text):
        emit(text[pos:m.start()])
        pos = m.end()
        codes = [int(c) if c else 0 for c in re.split("[;:]", m.group(1) or "0")]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                fg, bg, bold = None, None, False
            elif c == 1:
                bold = True
            elif c == 22:
                bold = False
            elif 30 <= c <= 37 or 90 <= c <= 97:
                fg = BASE16[c - 30 if c < 90 else c - 90 + 8]
            elif 40 <= c <= 47 or 100 <= c <= 107:
                bg = BASE16[c - 40 if c < 100 else c - 100 + 8]
            elif c == 39:
                fg = None
            elif c == 49:
                bg = None
            elif c in (38, 48) and i + 1 < len(codes):
                if codes[i + 1] == 5 and i + 2 < len(codes):
                    color, i = _xterm(codes[i + 2]), i + 2
                elif codes[i + 1] == 2 and i + 4 < len(codes):
                    color, i = "#%02x%02x%02x" % tuple(codes[i + 2:i + 5]), i + 4
                else:
                    color = None
                if c == 38:
                    fg = color
                else:
                    bg = color
            i += 1
    emit(text[pos:])
    return "".join(out)


def capture(db: str, workdir: Path) -> str:
    from funcsight.demo.sample_app import FILES_V2

    shop = workdir / "shop-checkout"
    for relative, text in FILES_V2.items():
        (shop / relative).parent.mkdir(parents=True, exist_ok=True)
        (shop / relative).write_text(text)
    funcsight = str(Path(sys.executable).parent / "funcsight")
    init = workdir / "init.lua"
    init.write_text(
        "vim.cmd('filetype on | syntax on | set number termguicolors background=dark')\n"
        "vim.cmd('highlight LspCodeLens guifg=#7fb2f0 gui=italic')\n"
        # Neovim 0.7 draws one virtual text per line: keep the warnings in the sign column so the lens shows.
        "vim.diagnostic.config({ virtual_text = false, signs = true })\n"
        f"dofile({json.dumps(str(HERE / 'funcsight.lua'))}).setup({{ funcsight = {json.dumps(funcsight)}, "
        f"db = {json.dumps(db)} }})\n"
    )
    session = f"funcsight-shot-{os.getpid()}"
    env = dict(os.environ, TERM="xterm-256color", HOME=str(workdir))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS), "-c", str(shop),
                    f"nvim --clean -n -u {init} shop/pricing.py"], check=True, env=env)
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            time.sleep(1.0)
            subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)  # CursorHold / redraw
            subprocess.run(["tmux", "send-keys", "-t", session, ":doautocmd BufEnter", "Enter"], check=True)
            text = subprocess.run(["tmux", "capture-pane", "-p", "-e", "-t", session], capture_output=True, text=True,
                                  check=True).stdout
            if text.count("calls/req") >= 3 and "->" in text:
                time.sleep(0.5)
                subprocess.run(["tmux", "send-keys", "-t", session, ":", "Escape"], check=True)  # clear the command line
                time.sleep(0.3)
                return subprocess.run(["tmux", "capture-pane", "-p", "-e", "-t", session], capture_output=True, text=True,
                                      check=True).stdout
        raise SystemExit(f"no CodeLens appeared in Neovim within 60 s; last screen:\n{SGR.sub('', text)}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def render_png(ansi: str, out: Path, workdir: Path) -> None:
    page = workdir / "screen.html"
    page.write_text(
        "<!doctype html><meta charset=utf-8><style>body{margin:0;background:#1e1e1e}"
        "pre{margin:0;padding:12px;color:#e5e5e5;background:#1e1e1e;font:14px/1.25 'DejaVu Sans Mono',monospace}"
        f"</style><pre>{ansi_to_html(ansi)}</pre>"
    )
    width, height = COLS * 9 + 40, ROWS * 18 + 30
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                    f"--user-data-dir={workdir / 'chromium'}", f"--screenshot={out}", f"--window-size={width},{height}",
                    "--hide-scrollbars", page.as_uri()], check=True, capture_output=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="a store made by `funcsight demo` (default: make one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "lsp-neovim-codelens.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="funcsight-shot-") as tmp:
        workdir = Path(tmp)
        db = args.db
        if db is None:
            db = str(workdir / "demo.db")
            subprocess.run([str(Path(sys.executable).parent / "funcsight"), "demo", "--db", db, "--requests", "200"],
                           check=True, stdout=subprocess.DEVNULL)
        ansi = capture(os.path.abspath(db), workdir)
        (workdir / "screen.ansi").write_text(ansi)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        render_png(ansi, out, workdir)
        text_out = out.with_suffix(".txt")
        text_out.write_text(SGR.sub("", ansi))
        print(f"wrote {out} and {text_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
