#!/usr/bin/env bash
# Build the VS Code extension into editors/vscode/funcsight.vsix and check its manifest.
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund --loglevel=error
npx tsc -p ./
npx vsce package --out funcsight.vsix
python3 check_vsix.py funcsight.vsix
