"""The install that works without PyPI: ``python -m build`` makes an sdist and a wheel (the wheel
built from the sdist, with both C extensions), the wheel installs into a fresh venv (not editable)
and ``funcsight demo`` runs from it. A file missing from the sdist or the wheel, or a C build that
fails, fails here.

It builds and installs (about a minute, with pip's cache), so it runs when
``FUNCSIGHT_TEST_WHEEL=1`` (``.ci/run`` sets it for one run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("FUNCSIGHT_TEST_WHEEL") != "1",
                                reason="builds and installs a wheel: run with FUNCSIGHT_TEST_WHEEL=1 (.ci/run does)")


def run(*command: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{' '.join(command)} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def expected_wheel_files() -> set[str]:
    """Every module of every folder mapped into the funcsight namespace, where the wheel puts it."""
    config = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]
    files = set()
    for package, folder in config["package-dir"].items():
        assert package in config["packages"], f"{package} is mapped but not listed in packages"
        for path in (CHECKOUT / folder).glob("*.py"):
            files.add(package.replace(".", "/") + "/" + path.name)
    files.add("funcsight/instrumentation/_csensor.pyi")
    return files


def test_wheel_builds_installs_and_runs_the_demo(tmp_path):
    dist = tmp_path / "dist"
    env = {**os.environ, "FUNCSIGHT_REQUIRE_C": "1"}
    run(sys.executable, "-m", "build", "--outdir", str(dist), str(CHECKOUT), cwd=tmp_path, env=env)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = expected_wheel_files() - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    for extension in ("funcsight/instrumentation/_csensor", "funcsight/processors/_crollup"):
        assert any(n.startswith(extension) and n.endswith(".so") for n in names), f"{extension} not built into the wheel"
    assert not any(n.endswith(".c") for n in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(str(python), "-m", "pip", "install", "-q", f"{wheels[0]}[demo]", cwd=tmp_path, env=env)
    elsewhere = tmp_path / "user"
    elsewhere.mkdir()
    where = run(str(python), "-c", "import funcsight, funcsight.instrumentation.csensor as c, funcsight.processors._crollup;"
                "assert c.available(), c.UNAVAILABLE; print(funcsight.__file__)", cwd=elsewhere)
    assert str(venv) in where and str(CHECKOUT) not in where, where
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FUNCSIGHT_")) and k != "PYTHONPATH"}
    out = run(str(venv / "bin" / "funcsight"), "demo", "--db", "demo.db", "--requests", "60", cwd=elsewhere, env=clean)
    assert "shop.db.fetch_price" in out and (elsewhere / "demo.db").exists(), out
    hint = run(str(python), "-c", "from funcsight.install import install_hint; print(install_hint('mcp'))", cwd=elsewhere)
    assert f"pip install '{wheels[0]}[mcp]'" in hint, hint
