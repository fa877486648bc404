#!/usr/bin/env python3
"""Runs the workspace's test binaries, several at a time (tests/check.sh's test step).

`cargo test` runs one test binary after the other. Most of this workspace's integration
tests spend their time waiting (a system call stretched by strace, a child program, an
fsync, a moto server), so a two-core machine sits idle for most of a serial run. This
runs up to --jobs binaries at once, each exactly as `cargo test` runs it (the same
executable, in its package's directory, with the package's CARGO_MANIFEST_DIR, its own
test threads), so tests that share a fixture within their binary (a built .deb, a moto
server) still share it. A binary that changes the whole machine runs alone, after the
others (SERIAL). Each binary's output is printed whole when it ends, with its
"test result:" line, which tests/check.sh sums.

Doctests are not here: `cargo test --doc` runs them.

Usage: tests/run_tests.py [--jobs N] [CARGO ARGS...]   (e.g. --workspace --locked)
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

# Binaries that must run with nothing beside them.
SERIAL = {
    # Turns file leases off for the whole machine (fs.leases-enable = 0) while it runs.
    "tmpclean_without_leases",
}
# The longest binaries start first, so that the pool does not end waiting on one of them.
LONG_FIRST = [
    "packaging",
    "delete_step",
    "off_local_disk",
    "notifications",
    "faults",
    "compact",
    "readme",
    "archive",
    "model_all",
    "compact_spill",
    "properties",
    "crash",
]


def test_binaries(cargo_args):
    """(name, package directory, executable) of every test binary, built if needed."""
    cmd = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True).stdout
    found = []
    for line in out.splitlines():
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
            found.append((m["target"]["name"], os.path.dirname(m["manifest_path"]), m["executable"]))
    return found


def run_one(name, pkg_dir, exe):
    env = dict(os.environ, CARGO_MANIFEST_DIR=pkg_dir)
    start = time.monotonic()
    p = subprocess.run([exe], cwd=pkg_dir, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace")
    return name, pkg_dir, p.returncode, p.stdout, time.monotonic() - start


def show(result):
    name, pkg_dir, code, output, secs = result
    pkg = os.path.basename(pkg_dir)
    print(f"== {pkg}: {name} ({secs:.1f} s){'' if code == 0 else f' FAILED (exit {code})'}")
    print(output, end="" if output.endswith("\n") else "\n", flush=True)
    return code == 0


def main():
    args = sys.argv[1:]
    jobs = 3
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    binaries = test_binaries(args)
    rank = {n: i for i, n in enumerate(LONG_FIRST)}
    pooled = sorted((b for b in binaries if b[0] not in SERIAL),
                    key=lambda b: (rank.get(b[0], len(rank)), b[0]))
    failed = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in as_completed([pool.submit(run_one, *b) for b in pooled]):
            r = f.result()
            if not show(r):
                failed.append(r[0])
    for b in binaries:
        if b[0] in SERIAL:
            r = run_one(*b)
            if not show(r):
                failed.append(r[0])
    print(f"== {len(binaries)} test binaries in {time.monotonic() - started:.0f} s"
          + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
