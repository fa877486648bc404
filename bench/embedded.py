#!/usr/bin/env python3
"""The backend's own calls through the Python package against what a backend developer
would otherwise embed: SQLite (Python's sqlite3) in WAL mode with synchronous=FULL and one
transaction per event, the same durability (every call durable when it returns). Both on
the same disk, in the same run, side by side.

    embedded.py SCRATCH REPS [--events N] [--day-events N] [--inbox N]
        -> one JSON document on stdout (bench/run --only embedded turns it into rows)

- record: events recorded per second by 1, 4 and 16 threads of one process and by 1, 4
  and 16 processes (each a fresh root or database; every process or thread starts at a
  barrier, the clock runs until the last call returned);
- summary: a live day of --day-events events; the median time of a summary call with
  nothing new since the last call, and with 100 new events since (recorded by another
  process, not timed); SQLite answers the same totals per user and model with one query
  (GROUP BY user_id, model over the day) that its covering index answers alone;
- unacked: the ids of the unacknowledged notifications in an inbox of --inbox entries,
  half of them acknowledged; SQLite: one indexed query. Timed with nothing new since the
  last call, and with 10 deliveries and 10 acknowledgements since (made by another
  process, not timed; SQLite's 10 inserts and 10 updates are not timed either).
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import threading
import time

import tmpa

DAY = "2026-11-01"


def event(i, tag=""):
    return {"id": f"{tag}b{i:07d}", "ts": f"{DAY}T10:00:00Z", "user_id": f"user{i % 50:03d}",
            "model": "gpt-4o" if i % 3 else "gpt-4o-mini", "prompt_tokens": 100 + i % 900,
            "completion_tokens": 20 + i % 400, "request_id": f"req-{i:08d}",
            "latency_ms": 150 + i % 2000, "endpoint": "/v1/chat"}


def fresh_dir(scratch, name):
    path = os.path.join(scratch, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# -- SQLite --------------------------------------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, day TEXT NOT NULL, ts TEXT NOT NULL,
  user_id TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_day ON events (day, user_id, model, prompt_tokens,
  completion_tokens);
CREATE TABLE IF NOT EXISTS notifications (user_id TEXT NOT NULL, id TEXT NOT NULL,
  body TEXT NOT NULL, acked INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (user_id, id));
CREATE INDEX IF NOT EXISTS notifications_unacked ON notifications (user_id, acked, id);
"""


def connect(path):
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def sqlite_insert(db, ev):
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
               (ev["id"], ev["ts"][:10], ev["ts"], ev["user_id"], ev["model"],
                ev["prompt_tokens"], ev["completion_tokens"], json.dumps(ev)))
    db.execute("COMMIT")


def sqlite_summary(db, day):
    rows = db.execute("SELECT user_id, model, count(*), sum(prompt_tokens), sum(completion_tokens)"
                      " FROM events WHERE day = ? GROUP BY user_id, model", (day,)).fetchall()
    by_user, by_model = {}, {}
    for u, m, n, p, c in rows:
        for d, k in ((by_user, u), (by_model, m)):
            t = d.setdefault(k, [0, 0, 0])
            t[0] += n
            t[1] += p
            t[2] += c
    return by_user, by_model


# -- record_event: threads and processes --------------------------------------------------
def tmpa_worker(root_path, start, n, barrier, tag):
    r = tmpa.Root(root_path)
    barrier.wait()
    for i in range(start, start + n):
        r.record_event(event(i, tag))


def sqlite_worker(db_path, start, n, barrier, tag):
    db = connect(db_path)
    barrier.wait()
    for i in range(start, start + n):
        sqlite_insert(db, event(i, tag))
    db.close()


def run_record(kind, how, k, total, scratch):
    """Seconds for `total` events recorded by k threads or k processes."""
    base = fresh_dir(scratch, f"rec-{kind}-{how}-{k}")
    if kind == "tmpa":
        os.makedirs(os.path.join(base, "token_stats", DAY))
        target, worker = base, tmpa_worker
    else:
        target, worker = os.path.join(base, "db.sqlite"), sqlite_worker
        connect(target).close()
    per = total // k
    if how == "threads":
        barrier = threading.Barrier(k + 1)
        ws = [threading.Thread(target=worker, args=(target, j * per, per, barrier, ""))
              for j in range(k)]
    else:
        barrier = mp.get_context("fork").Barrier(k + 1)
        ws = [mp.get_context("fork").Process(target=worker, args=(target, j * per, per, barrier, ""))
              for j in range(k)]
    for w in ws:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in ws:
        w.join()
    dt = time.perf_counter() - t0
    if how == "processes" and any(w.exitcode for w in ws):
        raise SystemExit(f"a {kind} worker failed")
    shutil.rmtree(base, ignore_errors=True)
    return dt, per * k


# -- summary of a live day ----------------------------------------------------------------
def write_plain(day_dir, evs):
    """Loose event files written as a test fixture (no fsync: this is not what is timed)."""
    for ev in evs:
        with open(os.path.join(day_dir, f"evt_{ev['id']}.json"), "w") as f:
            json.dump(ev, f)


def record_more(root_path, start, n, tag):
    r = tmpa.Root(root_path)
    for i in range(start, start + n):
        r.record_event(event(i, tag))


def timed_calls(fn, calls):
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_summary(day_events, rounds, scratch):
    base = fresh_dir(scratch, "summary")
    root_path = os.path.join(base, "root")
    day_dir = os.path.join(root_path, "token_stats", DAY)
    os.makedirs(day_dir)
    write_plain(day_dir, [event(i) for i in range(day_events)])
    db_path = os.path.join(base, "db.sqlite")
    db = connect(db_path)
    db.execute("BEGIN")
    for d in (DAY, "2026-10-31"):
        for i in range(day_events):
            ev = event(i, d)
            ev["ts"] = f"{d}T10:00:00Z"
            db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
                       (ev["id"], d, ev["ts"], ev["user_id"], ev["model"], ev["prompt_tokens"],
                        ev["completion_tokens"], json.dumps(ev)))
    db.execute("COMMIT")
    os.system("sync")
    r = tmpa.Root(root_path)
    t0 = time.perf_counter()
    first = r.summary(DAY)
    first_s = time.perf_counter() - t0
    assert first["events"] == day_events and not first["problems"], first
    t0 = time.perf_counter()
    r.summary(DAY)  # a second process would find the cache written by the first call
    out = {"first_call_s": first_s}
    out["tmpa_nothing_new"] = timed_calls(lambda: r.summary(DAY), 200)
    out["sqlite_nothing_new"] = timed_calls(lambda: sqlite_summary(db, DAY), 200)
    tmpa_new, sqlite_new = [], []
    n = day_events
    ctx = mp.get_context("fork")
    for k in range(rounds):
        # 100 new events, recorded by another process (a gunicorn worker): not timed.
        p = ctx.Process(target=record_more, args=(root_path, 10_000_000 + k * 100, 100, "n"))
        p.start()
        p.join()
        t0 = time.perf_counter()
        s = r.summary(DAY)
        tmpa_new.append(time.perf_counter() - t0)
        n += 100
        assert s["events"] == n, (s["events"], n)
        for i in range(100):
            sqlite_insert(db, event(10_000_000 + k * 100 + i, "n"))
        t0 = time.perf_counter()
        sqlite_summary(db, DAY)
        sqlite_new.append(time.perf_counter() - t0)
    out["tmpa_100_new"] = tmpa_new
    out["sqlite_100_new"] = sqlite_new
    db.close()
    shutil.rmtree(base, ignore_errors=True)
    return out


# -- unacked in an inbox --------------------------------------------------------------------
def changer(root_path, db_path, user, conn):
    """Another process (a gunicorn worker): on each request, 10 deliveries and 10
    acknowledgements, made both in the TMPA tree and in the database."""
    r = tmpa.Root(root_path)
    db = connect(db_path)
    while True:
        msg = conn.recv()
        if msg is None:
            break
        new, old = msg
        for i in new:
            r.deliver(user, {"id": i})
        for i in old:
            r.ack(user, i)
        db.execute("BEGIN IMMEDIATE")
        for i in new:
            db.execute("INSERT INTO notifications VALUES (?,?,?,0)", (user, i, json.dumps({"id": i})))
        for i in old:
            db.execute("UPDATE notifications SET acked = 1 WHERE user_id = ? AND id = ?", (user, i))
        db.execute("COMMIT")
        conn.send("done")
    db.close()


def run_unacked(inbox, rounds, scratch):
    base = fresh_dir(scratch, "inbox")
    root_path = os.path.join(base, "root")
    user = "u1"
    for sub in ("inbox", "ack"):
        os.makedirs(os.path.join(root_path, "notifications", user, sub))
    db = connect(os.path.join(base, "db.sqlite"))
    db.execute("BEGIN")
    for i in range(inbox):
        body = json.dumps({"id": i, "title": f"notification {i}", "body": "x" * 100})
        with open(os.path.join(root_path, "notifications", user, "inbox", f"ntf_{i}.json"), "w") as f:
            f.write(body)
        acked = i % 2
        if acked:
            with open(os.path.join(root_path, "notifications", user, "ack", f"ntf_{i}.ack"), "w") as f:
                f.write('{"acked_at":"2026-11-01T10:00:00Z"}')
        db.execute("INSERT INTO notifications VALUES (?,?,?,?)", (user, str(i), body, acked))
    db.execute("COMMIT")
    r = tmpa.Root(root_path)
    got = r.unacked(user)
    assert len(got) == inbox // 2 + inbox % 2, len(got)
    q = lambda: db.execute("SELECT id FROM notifications WHERE user_id = ? AND acked = 0 ORDER BY id",
                           (user,)).fetchall()
    out = {"tmpa": timed_calls(lambda: r.unacked(user), 50), "sqlite": timed_calls(q, 50)}
    # 10 deliveries and 10 acknowledgements since the last call, by another process: one
    # started afresh ("spawn": a fork would make this process pay its copy-on-write faults
    # in the timed call), both sides changed before either is timed, the order alternated.
    tmpa_changed, sqlite_changed = [], []
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    p = ctx.Process(target=changer, args=(root_path, os.path.join(base, "db.sqlite"), user, there))
    p.start()
    unacked = len(got)
    for k in range(rounds):
        new = [f"new{k:03d}-{i}" for i in range(10)]
        old = [str(2 * (k * 10 + i)) for i in range(10)]  # even ids: unacknowledged
        here.send((new, old))
        assert here.recv() == "done"
        for side in (("tmpa", "sqlite") if k % 2 else ("sqlite", "tmpa")):
            t0 = time.perf_counter()
            n = len(r.unacked(user)) if side == "tmpa" else len(q())
            (tmpa_changed if side == "tmpa" else sqlite_changed).append(time.perf_counter() - t0)
            assert n == unacked, (side, n, unacked)
    here.send(None)
    p.join()
    assert p.exitcode == 0
    out["tmpa_20_changes"] = tmpa_changed
    out["sqlite_20_changes"] = sqlite_changed
    db.close()
    shutil.rmtree(base, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scratch")
    ap.add_argument("reps", type=int)
    ap.add_argument("--events", type=int, default=800)
    ap.add_argument("--day-events", type=int, default=50_000)
    ap.add_argument("--inbox", type=int, default=5_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--only", default="record,summary,unacked")
    a = ap.parse_args()
    only = a.only.split(",")
    os.makedirs(a.scratch, exist_ok=True)
    record = {}
    # Interleaved, so that the disk's moods land on both sides alike.
    for _ in range(a.reps if "record" in only else 0):
        for k in (1, 4, 16):
            for how in ("threads", "processes"):
                for kind in ("tmpa", "sqlite"):
                    dt, n = run_record(kind, how, k, a.events, a.scratch)
                    record.setdefault(f"{kind} {how} {k}", []).append(n / dt)
                    print(f"  {kind} {how} {k}: {n / dt:.0f}/s", file=sys.stderr, flush=True)
    out = {"record_per_s": record}
    if "summary" in only:
        out["summary"] = run_summary(a.day_events, a.rounds, a.scratch)
    if "unacked" in only:
        out["unacked"] = run_unacked(a.inbox, a.rounds, a.scratch)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
