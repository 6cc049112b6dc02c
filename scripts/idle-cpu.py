#!/usr/bin/env python3
"""CPU that an idle `nib serve` uses: start it on a workspace, let it load the model and build
the index, then read its user+system CPU time (/proc/PID/stat) over a quiet window.

    python3 scripts/idle-cpu.py [--nib target/release/nib] [--root .] [--settle 60] [--window 30]
"""
import argparse
import json
import os
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--nib", default="target/release/nib")
ap.add_argument("--root", default=".")
ap.add_argument("--settle", type=float, default=60, help="seconds to load and index first")
ap.add_argument("--window", type=float, default=30, help="seconds measured")
args = ap.parse_args()
root = os.path.abspath(args.root)

p = subprocess.Popen([args.nib, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)


def send(msg):
    body = json.dumps(msg).encode()
    p.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    p.stdin.flush()


def drain():
    while p.stdout.read(4096):
        pass


threading.Thread(target=drain, daemon=True).start()
uri = "file://" + root
send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
      "params": {"processId": None, "rootUri": uri, "capabilities": {},
                 "workspaceFolders": [{"uri": uri, "name": os.path.basename(root)}]}})
send({"jsonrpc": "2.0", "method": "initialized", "params": {}})


def cpu_seconds():
    fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


time.sleep(args.settle)
c0, t0 = cpu_seconds(), time.time()
time.sleep(args.window)
c1, t1 = cpu_seconds(), time.time()
print(f"idle nib serve: {c1 - c0:.2f} s of CPU in {t1 - t0:.0f} s ({100 * (c1 - c0) / (t1 - t0):.2f}%)")
p.kill()
