#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` for AVX2 (the third-party inference server that the remote
# backend's tests talk to on loopback) into ~/.cache/nib/llama-server and prints its path; see
# scripts/get-llama.sh. Idempotent.
set -euo pipefail
exec "$(dirname "$0")/get-llama.sh" llama-server avx2
