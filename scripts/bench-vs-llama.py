#!/usr/bin/env python3
"""nib beside llama.cpp on the same model file, in one run, at each x86 instruction-set level.

    scripts/bench-vs-llama.py [--models small,large] [--reps 3] [--threads 2] [--json FILE]

For each model: llama.cpp's `llama-bench -t T -p 512 -n 128 -r REPS`, built by
scripts/get-llama.sh for AVX2 and for this CPU (`native`), then `nib bench` (512-token prompt,
128 tokens) REPS times on each kernel path this CPU has, forced with NIB_KERNELS; the median of
nib's runs. Each nib path is set beside the llama.cpp build of the same instruction set: the
AVX-VNNI path beside llama.cpp's AVX-VNNI build where the CPU has the VEX encoding (Intel's
since Alder Lake), else beside the AVX2 build (an AVX-512 CPU without it runs nib's path on
the EVEX encoding, which llama.cpp's AVX-VNNI build does not use). Prints a Markdown table;
ratios carry over between machines, absolute figures do not. Needs `cargo build --release -p
nib-lsp` and `nib model pull [large]`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NIB = os.path.join(ROOT, "target", "release", "nib")
MODELS = {
    "small": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "large": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
}


def vex_vnni():
    """Whether this CPU has AVX-VNNI's VEX encoding (the `avx_vnni` flag)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx_vnni" in line for line in f)
    except OSError:
        return False


# nib's path -> the llama.cpp build it is compared with.
PATHS = {"avx512vnni": "native", "avxvnni": "avxvnni" if vex_vnni() else "avx2", "avx2": "avx2"}


def model_path(alias):
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.path.join(cache, "nib", "models", MODELS[alias])


def llama(level, model, threads, reps):
    exe = subprocess.run(
        [os.path.join(ROOT, "scripts", "get-llama.sh"), "llama-bench", level],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    out = subprocess.run(
        [exe, "-m", model, "-t", str(threads), "-p", "512", "-n", "128", "-r", str(reps), "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = json.loads(out)
    pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
    tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
    return pp, tg


def nib(path, model, threads, reps):
    runs = []
    for _ in range(reps):
        env = dict(os.environ, NIB_KERNELS=path)
        out = subprocess.run(
            [NIB, "bench", "--json", "--threads", str(threads), "--model", model,
             "--prompt-tokens", "512", "--gen-tokens", "128"],
            capture_output=True, text=True, env=env, check=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    med = lambda key: statistics.median(r[key] for r in runs)
    return {
        "prefill": med("prefill_tok_s"), "decode": med("decode_tok_s"),
        "rss_mb": max(r["peak_rss_mb"] or 0 for r in runs),
        "share": med("decode_share_of_bound"), "bw": med("mem_read_gb_s"),
        "kernels": runs[0]["kernels"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="small,large")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    if not os.access(NIB, os.X_OK):
        sys.exit("build nib first: cargo build --release -p nib-lsp")
    results = []
    print("| model | nib path | llama.cpp build | prefill nib | prefill llama.cpp | ratio "
          "| decode nib | decode llama.cpp | ratio | decode / memory bound | nib peak RSS (file) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for alias in a.models.split(","):
        model = model_path(alias)
        size_mb = os.path.getsize(model) / 1e6
        ref = {lvl: llama(lvl, model, a.threads, a.reps) for lvl in sorted(set(PATHS.values()))}
        for path, lvl in PATHS.items():
            try:
                r = nib(path, model, a.threads, a.reps)
            except subprocess.CalledProcessError as e:
                print(f"| {alias} | {path} | not on this CPU: {e.stderr.strip()[:80]} |")
                continue
            pp, tg = ref[lvl]
            rss = r["rss_mb"]
            results.append(dict(model=alias, path=path, llama=lvl, nib=r, llama_pp=pp, llama_tg=tg, file_mb=size_mb))
            print(f"| {alias} | {path} | {lvl} | {r['prefill']:.0f} | {pp:.0f} | {r['prefill'] / pp:.2f}x "
                  f"| {r['decode']:.1f} | {tg:.1f} | {r['decode'] / tg:.2f}x | {r['share'] * 100:.0f}% "
                  f"| {rss:.0f} MB ({rss / size_mb:.2f}x) |")
            sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
