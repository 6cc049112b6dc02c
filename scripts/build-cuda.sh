#!/usr/bin/env bash
# Builds nib with the CUDA backend on a machine without the CUDA toolkit (this repo's dev VM):
# nvcc, headers and link libraries come from NVIDIA's wheels on PyPI, and libcuda (the driver,
# present only where a GPU is) is replaced at link time by a stub with the same symbols.
# The binary then runs on a machine with an NVIDIA driver and CUDA 13 libraries
# (LD_LIBRARY_PATH pointing at libcublas.so.13 and friends).
#
#   scripts/build-cuda.sh [cargo args...]      e.g. scripts/build-cuda.sh --release -p nib-lsp
#
# Environment: CUDA_COMPUTE_CAP (default 90: H100/H200), NIB_CUDA_DIR (default ~/.cache/nib/cuda).
set -euo pipefail
dir="${NIB_CUDA_DIR:-$HOME/.cache/nib/cuda}"
root="$dir/root/nvidia/cu13"
if [ ! -x "$root/bin/nvcc" ]; then
  mkdir -p "$dir/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$dir/wheels" "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" \
    "nvidia-cuda-nvrtc==13.0.*"
  for w in "$dir"/wheels/*.whl; do unzip -q -o "$w" -d "$dir/root"; done
  (cd "$root/lib" && for l in cublas cublasLt cudart nvrtc; do ln -sf "lib$l.so.13" "lib$l.so"; done \
    && ln -sf libcurand.so.10 libcurand.so)
fi
if [ ! -e "$root/lib/libcuda.so" ]; then
  # Every driver entry point cudarc declares, as an empty function: enough to link against.
  cargo fetch --quiet
  sys=$(find "$HOME/.cargo/registry/src" -path '*cudarc-0.19*/src/driver/sys/mod.rs' | head -1)
  grep -hoE "^\s+(pub )?fn cu[A-Za-z0-9_]+\(" "$sys" | grep -oE "cu[A-Za-z0-9_]+" | sort -u \
    | awk '{print "void "$1"(void){}"}' > "$dir/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/libcuda.so" "$dir/libcuda_stub.c"
fi
export CUDA_ROOT="$root" CUDA_PATH="$root" PATH="$root/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
exec cargo build --features cuda "$@"
