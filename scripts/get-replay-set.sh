#!/usr/bin/env bash
# The second typing-replay set: six third-party files in Python, TypeScript and Go, fetched from
# package registries (PyPI, npm, Debian) at pinned versions, so that no latency lever is tuned to
# Rust alone. Prints the six paths, one a line, for `nib-eval replay`:
#
#   target/release/nib-eval replay --chars 300 --out eval/reports/replay-polyglot.jsonl \
#       $(scripts/get-replay-set.sh)
#
# Files land in ${NIB_CACHE_DIR:-~/.cache/nib}/replay-set (nothing is written to the repository).
set -euo pipefail

dir="${NIB_CACHE_DIR:-$HOME/.cache/nib}/replay-set"
mkdir -p "$dir"
cd "$dir"

# Python: click 8.1.8 (PyPI wheel).
if [ ! -d click-8.1.8 ]; then
    pip3 download click==8.1.8 --no-deps --only-binary=:all: -d . -q >&2
    python3 -m zipfile -e click-8.1.8-py3-none-any.whl click-8.1.8
fi

# TypeScript: rxjs 7.8.2 (its npm package ships the TypeScript sources).
if [ ! -d rxjs-7.8.2 ]; then
    npm pack rxjs@7.8.2 --silent >&2
    mkdir -p rxjs-7.8.2
    tar xzf rxjs-7.8.2.tgz -C rxjs-7.8.2
fi

# Go: the Go 1.19 standard library (Debian's golang-1.19-src; apt-get download needs no root).
if [ ! -d go-1.19 ]; then
    if ! apt-get download golang-1.19-src >&2 2>/dev/null; then
        echo "get-replay-set: Debian's golang-1.19-src is not available from apt here" >&2
        exit 1
    fi
    dpkg-deb -x golang-1.19-src_*_all.deb go-1.19
fi

go=go-1.19/usr/share/go-1.19/src
for f in click-8.1.8/click/parser.py click-8.1.8/click/termui.py \
    rxjs-7.8.2/package/src/internal/Subscriber.ts \
    rxjs-7.8.2/package/src/internal/operators/mergeInternals.ts \
    $go/net/http/cookie.go $go/encoding/csv/reader.go; do
    test -f "$f" || { echo "get-replay-set: $dir/$f is missing" >&2; exit 1; }
    echo "$dir/$f"
done
