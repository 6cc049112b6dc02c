#!/usr/bin/env bash
# The kernels' tests for aarch64 (NEON with dotprod, plain NEON, scalar; each against the scalar
# reference bit for bit), cross-compiled and run under Debian's qemu-user, whose `max` CPU has
# dotprod and i8mm (.cargo/config.toml names the linker and the runner). Correctness only: times
# under emulation mean nothing. Installs what it needs if absent: the Rust target, Debian's
# gcc-aarch64-linux-gnu and qemu-user (root).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
  rustup target add aarch64-unknown-linux-gnu
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "install gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (as root)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user >/dev/null; }
fi
cargo test -p nib-model --lib --target aarch64-unknown-linux-gnu kernels -- --nocapture
