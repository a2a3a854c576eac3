"""The VS Code extension: built with npm (TypeScript, vscode-languageclient) and packaged with
@vscode/vsce into a .vsix whose manifest is checked (editors/vscode/check_vsix.py). Runs when npm
is installed (CI requires it); the build needs the npm registry."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "editors" / "vscode"


def _checker():
    spec = importlib.util.spec_from_file_location("check_vsix", VSCODE / "check_vsix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vsix_builds_and_its_manifest_is_complete():
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("npm missing: CI builds the VS Code extension")
        pytest.skip("npm not installed")
    done = subprocess.run(["bash", str(VSCODE / "build.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    vsix = VSCODE / "funcsight.vsix"
    manifest = _checker().check(str(vsix))
    assert manifest["main"] == "./out/extension.js"
    assert manifest["contributes"]["configuration"]["properties"]["funcsight.storePath"]["type"] == "string"
    print(f"\n{vsix.name}: {vsix.stat().st_size} bytes")


def test_the_checker_rejects_a_package_without_the_settings(tmp_path):
    import json
    import zipfile

    bad = tmp_path / "bad.vsix"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("extension.vsixmanifest", "<PackageManifest/>")
        z.writestr("extension/package.json", json.dumps({"name": "funcsight", "main": "./out/extension.js",
                                                         "contributes": {"configuration": {"properties": {}}},
                                                         "activationEvents": ["onLanguage:python"]}))
        z.writestr("extension/out/extension.js", 'require("vscode-languageclient/node"); ["lsp"]; "lsp"')
        z.writestr("extension/node_modules/vscode-languageclient/package.json", "{}")
    with pytest.raises(AssertionError, match="settings missing"):
        _checker().check(str(bad))
