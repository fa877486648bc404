#!/usr/bin/env python3
"""A backend writing one event file every INTERVAL ms, the way a careful backend does
(tmp + fsync + rename + directory fsync), for SECONDS or until SIGTERM. Prints each
write as [end, latency] (seconds; `end` on CLOCK_MONOTONIC, which every process of the
machine shares) in one JSON list on stdout.

    bench/latency_writer.py DIR SECONDS [INTERVAL_MS]
"""
import json
import os
import signal
import sys
import time


def main():
    d, seconds = sys.argv[1], float(sys.argv[2])
    interval = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.020
    os.makedirs(d, exist_ok=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    body = json.dumps({"id": "x" * 26, "ts": "2026-11-25T10:00:00Z", "user_id": "u1",
                       "model": "m", "prompt_tokens": 120, "completion_tokens": 48}).encode()
    lat = []
    end = time.monotonic() + seconds
    n = 0
    next_at = time.monotonic()
    while not stop and time.monotonic() < end:
        n += 1
        final = os.path.join(d, f"evt_w{n}.json")
        t0 = time.perf_counter()
        fd = os.open(final + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, body)
        os.fsync(fd)
        os.close(fd)
        os.rename(final + ".tmp", final)
        os.fsync(dfd)
        lat.append([time.monotonic(), time.perf_counter() - t0])
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    json.dump(lat, sys.stdout)


if __name__ == "__main__":
    main()
