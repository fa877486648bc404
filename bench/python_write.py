#!/usr/bin/env python3
"""root.record_event (tmpa, the Rust core) vs the backend's plain Python write of the same
event file (tmp + fsync + os.replace), side by side in one process.

    python_write.py N REPS SCRATCH     -> one JSON line: {"tmpa": [s, ...], "plain": [s, ...]}

The plain write does not fsync the directory, so a crash can still lose the rename;
record_event does (tmp, fsync, rename, directory fsync), so it is expected to cost up to
one more fsync per event.
"""
import json
import os
import shutil
import sys
import time

import tmpa


def event(i):
    return {"id": f"b{i:07d}", "ts": "2026-11-01T10:00:00Z", "user_id": f"user{i % 50:03d}",
            "model": "gpt-4o", "prompt_tokens": 100 + i % 900, "completion_tokens": 20 + i % 400,
            "request_id": f"req-{i:08d}", "latency_ms": 150 + i % 2000, "endpoint": "/v1/chat"}


def fresh(scratch, name):
    root = os.path.join(scratch, name)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, "token_stats", "2026-11-01"))
    return root


def plain(root, n):
    day = os.path.join(root, "token_stats", "2026-11-01")
    for i in range(n):
        ev = event(i)
        final = os.path.join(day, f"evt_{ev['id']}.json")
        tmp = final + ".tmp"
        with open(tmp, "w") as f:
            json.dump(ev, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)


def ours(root, n):
    r = tmpa.Root(root)
    for i in range(n):
        r.record_event(event(i))


def main():
    n, reps, scratch = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    out = {"tmpa": [], "plain": []}
    for _ in range(reps):
        for name, fn in (("tmpa", ours), ("plain", plain)):
            root = fresh(scratch, "py-" + name)
            t0 = time.perf_counter()
            fn(root, n)
            out[name].append(time.perf_counter() - t0)
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
