#!/usr/bin/env bash
# Runs every test of the workspace. The real-model tests need the default model: it is fetched
# first if absent (idempotent; Hugging Face where reachable, else the Python package index), and
# so are the editors the editor tests drive (Neovim; VS Code as code-server in Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
# The binary just built (a `cargo run -p` would resolve features anew and rebuild candle).
target/debug/nib model pull --quiet
# A real Neovim 0.12 for the editor test (lsp/tests/nvim.rs).
scripts/get-nvim.sh >/dev/null
# The VS Code extension: compile, lint, unit tests, .vsix; Node 24, code-server and Chromium for
# its end-to-end test (lsp/tests/vscode.rs).
scripts/vscode.sh
# llama.cpp's server, the third-party inference server the remote backend is tested against
# (lsp/tests/remote.rs); built once from the llama-cpp-python sdist.
scripts/get-llama-server.sh >/dev/null
cargo test --workspace
# The kernels' tests and the real-model equivalence tests again on each other x86 kernel path
# this CPU has (the run above took the fastest; the scalar path is compared within
# paths_real), then the aarch64 kernels under qemu-user.
for path in $(target/debug/nib bench --list-kernels | tail -n +2 | grep -vx scalar); do
  echo "== NIB_KERNELS=$path"
  NIB_KERNELS=$path cargo test -p nib-model --lib --test kernels_real --test paths_real \
    --test speculation_real --test cancel_real
done
scripts/test-aarch64.sh
