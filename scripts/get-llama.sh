#!/usr/bin/env bash
# Builds one llama.cpp program from the llama.cpp sources vendored in the llama-cpp-python sdist
# on PyPI, outside the repository, and prints its path. Nothing of it enters the repo.
#
#   scripts/get-llama.sh PROGRAM [LEVEL]
#
# PROGRAM: llama-server (the inference server the remote backend is tested against) or
# llama-bench (the speed reference for `nib bench`). LEVEL, the instruction set it is built for:
#   avx2    (default) AVX2/FMA/F16C, no AVX-512: what an AVX2 laptop runs. Also the safe build
#           where the CPU reports AMX: ggml's AMX kernels crash where the kernel has not granted
#           the tile state (seen: a segfault in ggml_backend_amx_mul_mat at warm-up).
#   avxvnni AVX2 and AVX-VNNI (the VEX encoding of Intel's CPUs since Alder Lake), no AVX-512.
#   native  -march=native with AMX off: everything this CPU has (AVX-512 VNNI here). The AMX
#           instructions are also taken from the compiler (-mno-amx-*): with -march=native on a
#           CPU that has them, ggml built its AMX kernels whatever its GGML_AMX_* options said,
#           and they crashed (seen 2026-12-06 on a Xeon with AMX).
# Into $NIB_LLAMA_DIR, default ~/.cache/nib/llama-server for the AVX2 server (the path the
# tests look in) and ~/.cache/nib/llama-PROGRAM-LEVEL otherwise. Idempotent.
set -euo pipefail
program="${1:?usage: scripts/get-llama.sh llama-server|llama-bench [avx2|avxvnni|native]}"
level="${2:-avx2}"
case "$level" in
  avx2) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
               -DGGML_BMI2=ON -DGGML_AVX512=OFF) ;;
  avxvnni) flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_AVX_VNNI=ON -DGGML_FMA=ON
                  -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF) ;;
  native) noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
          flags=(-DGGML_NATIVE=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
                 "-DCMAKE_C_FLAGS=$noamx" "-DCMAKE_CXX_FLAGS=$noamx") ;;
  *) echo "unknown level $level (avx2, avxvnni or native)" >&2; exit 2 ;;
esac
case "$program" in
  llama-server | llama-bench) ;;
  *) echo "unknown program $program (llama-server or llama-bench)" >&2; exit 2 ;;
esac
cache="${XDG_CACHE_HOME:-$HOME/.cache}/nib"
if [ "$program-$level" = llama-server-avx2 ]; then
  default="$cache/llama-server"
else
  default="$cache/$program-$level"
fi
dir="${NIB_LLAMA_DIR:-$default}"
version=0.3.36
bin="$dir/bin/$program"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
for tool in cmake ninja; do
  command -v "$tool" >/dev/null || python3 -m pip install --quiet "$tool"
done
rm -rf "$dir/src" "$dir/build"
mkdir -p "$dir/src" "$dir/bin"
# The sdist straight from the package index (pip would build its metadata first), checked
# against the sha256 the index publishes.
python3 - "$dir/src" "$version" <<'PY'
import hashlib, re, sys, urllib.request
dest, version = sys.argv[1], sys.argv[2]
name = f"llama_cpp_python-{version}.tar.gz"
page = urllib.request.urlopen("https://pypi.org/simple/llama-cpp-python/", timeout=60).read().decode()
m = re.search(r'href="([^"#]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', page)
if not m:
    sys.exit(f"{name} is not on the package index")
data = urllib.request.urlopen(m.group(1), timeout=600).read()
if hashlib.sha256(data).hexdigest() != m.group(2):
    sys.exit(f"{name}: sha256 mismatch")
open(f"{dest}/{name}", "wb").write(data)
PY
tar -xzf "$dir/src/llama_cpp_python-$version.tar.gz" -C "$dir/src"
cmake -S "$dir/src/llama_cpp_python-$version/vendor/llama.cpp" -B "$dir/build" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF "${flags[@]}" \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER="$([ "$program" = llama-server ] && echo ON || echo OFF)" \
  -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >"$dir/cmake.log" 2>&1 ||
  { tail -20 "$dir/cmake.log" >&2; exit 1; }
cmake --build "$dir/build" --target "$program" -j "$(nproc)" >"$dir/build.log" 2>&1 ||
  { tail -20 "$dir/build.log" >&2; exit 1; }
cp "$dir/build/bin/$program" "$bin"
rm -rf "$dir/build" "$dir/src"
echo "$bin"
