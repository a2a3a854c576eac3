"""Check a built funcsight .vsix: a zip whose extension/package.json names the extension, points
``main`` at a file that is in the package, contributes the settings the extension reads, and whose
compiled code and vscode-languageclient are inside.

    python editors/vscode/check_vsix.py editors/vscode/funcsight.vsix
"""

from __future__ import annotations

import json
import posixpath
import sys
import zipfile

SETTINGS = {"funcsight.command", "funcsight.storePath", "funcsight.source", "funcsight.baselineVersion",
            "funcsight.candidateVersion", "funcsight.pollSeconds"}


def check(path: str) -> dict:
    """The manifest, or AssertionError naming what is wrong."""
    with zipfile.ZipFile(path) as vsix:
        names = set(vsix.namelist())
        assert "extension.vsixmanifest" in names, "no extension.vsixmanifest: not a VS Code package"
        manifest = json.loads(vsix.read("extension/package.json"))
        assert manifest["name"] == "funcsight", manifest["name"]
        main = posixpath.normpath(posixpath.join("extension", manifest["main"]))
        assert main in names or main + ".js" in names, f"main {manifest['main']} is not in the package"
        main_js = vsix.read(main if main in names else main + ".js").decode()
        assert "vscode-languageclient" in main_js and '"lsp"' in main_js, "the compiled extension does not start funcsight lsp"
        assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names), "vscode-languageclient not bundled"
        properties = manifest["contributes"]["configuration"]["properties"]
        assert SETTINGS <= set(properties), f"settings missing: {SETTINGS - set(properties)}"
        assert "onLanguage:python" in manifest["activationEvents"]
        assert not any(n.startswith("extension/src/") for n in names), "TypeScript sources packaged"
    return manifest


if __name__ == "__main__":
    found = check(sys.argv[1])
    print(f"{sys.argv[1]}: {found['name']} {found['version']}, main {found['main']}, "
          f"{len(found['contributes']['configuration']['properties'])} settings: ok")
