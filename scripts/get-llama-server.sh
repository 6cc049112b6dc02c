#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (the third-party inference server that the remote backend's
# tests talk to on loopback) from the llama.cpp sources vendored in the llama-cpp-python sdist on
# PyPI, into $NIB_LLAMA_DIR (default ~/.cache/nib/llama-server). Nothing of it enters the repo.
# Idempotent; prints the binary's path. Built for AVX2 rather than -march=native: on CPUs that
# report AMX, ggml's AMX kernels crash where the kernel has not granted the tile state (seen
# here: a segfault in ggml_backend_amx_mul_mat at warm-up).
set -euo pipefail
dir="${NIB_LLAMA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nib/llama-server}"
version=0.3.36
bin="$dir/bin/llama-server"
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
  -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >"$dir/cmake.log" 2>&1 ||
  { tail -20 "$dir/cmake.log" >&2; exit 1; }
cmake --build "$dir/build" --target llama-server -j "$(nproc)" >"$dir/build.log" 2>&1 ||
  { tail -20 "$dir/build.log" >&2; exit 1; }
cp "$dir/build/bin/llama-server" "$bin"
rm -rf "$dir/build" "$dir/src"
echo "$bin"
