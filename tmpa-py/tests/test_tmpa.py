"""The Python package on real trees: every call, its errors, concurrency with tmpa-compact,
and interop with the programs and with the backend's own tmp + os.replace files.

Run by tests/check.sh after `maturin develop`; the programs are taken from TMPA_BIN_DIR
(default: the workspace's target/debug, which check.sh builds)."""

import errno
import gzip
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import pytest

import tmpa

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("TMPA_BIN_DIR", os.path.join(REPO, "target", "debug"))
DAY = "2026-11-01"


def program(name):
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "-q", "--bin", name], cwd=REPO, check=True)
    return path


def event(i, day=DAY, user="u1", **extra):
    e = {
        "id": f"e{i}",
        "ts": f"{day}T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "user_id": user,
        "model": "gpt-x",
        "prompt_tokens": i,
        "completion_tokens": 2 * i,
    }
    e.update(extra)
    return e


@pytest.fixture
def root(tmp_path):
    for d in ("notifications", "token_stats", "chat_history"):
        (tmp_path / d).mkdir()
    return tmpa.Root(tmp_path)


def test_open_refuses_a_directory_that_is_not_a_root(tmp_path):
    """A directory without the data directories is refused with NotARootError (a ValueError)."""
    with pytest.raises(tmpa.NotARootError) as e:
        tmpa.Root(tmp_path)
    assert isinstance(e.value, ValueError)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        tmpa.Root(tmp_path / "missing")
    assert e.value.filename == str(tmp_path / "missing")


def test_record_event_and_read_the_day(root):
    """Recorded events come back (unknown fields kept), each id once, sorted by ts."""
    p = root.record_event(event(2, request_id="r-2", nested={"a": [1, 2]}))
    assert p == root.path / "token_stats" / DAY / "evt_e2.json"
    assert isinstance(root.path, os.PathLike)
    root.record_event(event(1))
    root.record_event(event(1))  # the same event again: still once
    got = root.day_events(DAY)
    assert [e["id"] for e in got] == ["e1", "e2"]
    assert got[1]["request_id"] == "r-2" and got[1]["nested"] == {"a": [1, 2]}
    assert root.day_events("2026-11-02") == []
    assert root.summary("2026-11-02")["events"] == 0
    assert not os.path.exists(root.path / "token_stats" / "2026-11-02")


def test_bad_events_and_names_are_value_errors(root):
    """A missing field, a negative count, an id with '../' and a bad day raise ValueError;
    nothing is written."""
    bad = [
        {k: v for k, v in event(1).items() if k != "model"},
        event(1, prompt_tokens=-1),
        dict(event(1), id="../../etc/passwd"),
        dict(event(1), ts="yesterday"),
    ]
    for e in bad:
        with pytest.raises(ValueError):
            root.record_event(e)
    with pytest.raises(ValueError):
        root.record_event({"id": "x", "value": float("nan")})
    with pytest.raises(ValueError):
        root.day_events("2026-13-01")
    for user in ("../x", "", "a/b"):
        with pytest.raises(ValueError):
            root.unacked(user)
    assert os.listdir(os.path.join(root.path, "token_stats")) == []


def test_read_day_reports_corrupt_files_by_path(root):
    """A corrupt event file is skipped and named with its reason; the rest is read."""
    root.record_event(event(1))
    bad = os.path.join(root.path, "token_stats", DAY, "evt_bad.json")
    with open(bad, "w") as f:
        f.write('{"id": "bad", "ts":')
    day = root.read_day(DAY)
    assert [e["id"] for e in day["events"]] == ["e1"]
    assert [p["path"] for p in day["problems"]] == [bad]
    assert day["problems"][0]["reason"]


def test_summary_is_exact_and_rebuilt_when_stale(root):
    """The summary folds every event; this process keeps it up to date; a new process
    that finds _summary.json corrupt reads the day and rewrites it."""
    for i in range(1, 6):
        root.record_event(event(i, user=f"u{i % 2}"))
    s = root.summary(DAY)
    assert s["events"] == 5 and s["problems"] == []
    assert s["prompt_tokens"] == 15 and s["completion_tokens"] == 30
    assert s["total_tokens"] == 45
    assert s["by_user"]["u1"]["events"] == 3
    assert s["by_model"]["gpt-x"]["total_tokens"] == 45
    path = os.path.join(root.path, "token_stats", DAY, "_summary.json")
    with open(path, "w") as f:
        f.write("{corrupt")
    assert root.summary(DAY)["events"] == 5
    fresh = subprocess.run([sys.executable, "-c", "import sys, tmpa; "
                            "print(tmpa.Root(sys.argv[1]).summary(sys.argv[2])['events'])",
                            str(root.path), DAY], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "5"
    with open(path) as f:
        assert json.load(f)["events"] == 5
    root.record_event(event(6))
    assert root.summary(DAY)["events"] == 6


def test_notifications_deliver_ack_unacked(root):
    """Deliver (id from the dict or given), ack twice (first receipt kept), list unacked."""
    assert root.deliver("u1", {"id": 7, "title": "hi"}) == "7"
    assert root.deliver("u1", {"title": "second"}, id="8") == "8"
    with pytest.raises(ValueError):
        root.deliver("u1", {"title": "no id"})
    inbox = os.path.join(root.path, "notifications", "u1", "inbox")
    with open(os.path.join(inbox, "ntf_7.json")) as f:
        assert json.load(f) == {"id": 7, "title": "hi"}
    assert root.unacked("u1") == ["7", "8"]
    receipt = root.ack("u1", "7")
    with open(receipt) as f:
        first = f.read()
    assert "acked_at" in json.loads(first)
    time.sleep(0.01)
    assert root.ack("u1", "7") == receipt
    with open(receipt) as f:
        assert f.read() == first
    assert root.is_acked("u1", "7") and not root.is_acked("u1", "8")
    assert root.unacked("u1") == ["8"]
    assert root.unacked("nobody") == []


def test_write_atomic_inside_the_root_only(root, tmp_path):
    """write_atomic creates directories and replaces whole files; '..', absolute paths
    outside the root and symlinked directories are refused (UnsafePathError, an OSError)."""
    p = root.write_atomic("chat_history/u1/profile/p.json", b"{}")
    root.write_atomic(os.path.join(root.path, "chat_history/u1/profile/p.json"), b'{"v":2}')
    with open(p, "rb") as f:
        assert f.read() == b'{"v":2}'
    assert os.listdir(os.path.dirname(p)) == ["p.json"]
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    os.symlink(outside, os.path.join(root.path, "chat_history", "evil"))
    for bad in ("../escape", "/etc/x", "chat_history/evil/x.json"):
        with pytest.raises(tmpa.UnsafePathError) as e:
            root.write_atomic(bad, b"x")
        assert isinstance(e.value, OSError)
    assert list(outside.iterdir()) == []
    target = tmp_path / "chat_history" / "plain.json"
    tmpa.write_atomic(target, b"[1]")
    assert target.read_bytes() == b"[1]"
    with pytest.raises(FileNotFoundError) as e:
        tmpa.write_atomic(tmp_path / "no" / "dir.json", b"x")
    assert e.value.errno == errno.ENOENT


def test_temp_final_name():
    """The one definition of a temporary (docs/FORMAT.md "Temporaries"), as the programs use it."""
    assert tmpa.temp_final_name("a.json.tmp") == "a.json"
    assert tmpa.temp_final_name("a.json.tmp.123-0-ff") == "a.json"
    assert tmpa.temp_final_name("a.json.tmpl") is None
    assert tmpa.temp_final_name("x.tmpfoo") is None
    assert tmpa.temp_final_name("ntf_a.json.tmp.4242.9f3a") == "ntf_a.json"


def test_long_ids_and_odd_names_are_accepted(root):
    """Whatever the backend can write is a name: a 240-byte event id (its file is 249
    bytes; the library's temporary is a short one), the longest id that fits, dots,
    dashes and spaces; one byte more than fits is a ValueError."""
    for id_ in ("i" * 240, "j" * 246, ".dot", "-dash", "with space"):
        p = root.record_event(dict(event(1), id=id_))
        assert os.path.basename(p) == f"evt_{id_}.json"
    assert len(root.day_events(DAY)) == 5
    day_dir = os.path.join(root.path, "token_stats", DAY)
    assert not [n for n in os.listdir(day_dir) if tmpa.temp_final_name(n)]
    with pytest.raises(ValueError):
        root.record_event(dict(event(1), id="k" * 247))


def test_write_session_then_read_it(root):
    """write_session writes sessions/{session}.json atomically; read_session and
    list_sessions see it; bad names are ValueErrors."""
    p = root.write_session("u1", "s1", b'{"messages": []}')
    assert str(p).endswith("chat_history/u1/sessions/s1.json")
    assert root.read_session("u1", "s1") == b'{"messages": []}'
    root.write_session("u1", "s1", b'{"messages": [1]}')
    assert root.read_session("u1", "s1") == b'{"messages": [1]}'
    assert root.list_sessions("u1") == [("s1", "live")]
    with pytest.raises(ValueError):
        root.write_session("u1", "../x", b"{}")


def test_every_call_works_without_proc(tmp_path):
    """With /proc unmounted (a chroot, a minimal sandbox), every call works: the library
    holds directories by descriptor and never goes through /proc/self/fd."""
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "umount -l /proc"],
        capture_output=True,
    )
    if probe.returncode != 0:
        if not os.environ.get("TMPA_ALLOW_SKIP"):
            pytest.fail("missing prerequisite: cannot unmount /proc in a private mount namespace (needs root); set TMPA_ALLOW_SKIP=1 to skip")
        pytest.skip("cannot unmount /proc in a private mount namespace here")
    (tmp_path / "token_stats").mkdir()
    script = """
import sys, tmpa
assert not __import__("os").path.exists("/proc/self")
root = tmpa.Root(sys.argv[1])
e = {"id": "a1", "ts": "2026-11-23T10:00:00Z", "user_id": "u1", "model": "m",
     "prompt_tokens": 3, "completion_tokens": 4}
root.record_event(e)
assert root.day_events("2026-11-23") == [e]
assert root.summary("2026-11-23")["total_tokens"] == 7
root.deliver("u1", {"id": 1}); root.ack("u1", "1"); assert root.unacked("u1") == []
root.write_session("u1", "s", b"{}"); assert root.read_session("u1", "s") == b"{}"
root.write_atomic("chat_history/u1/profile/p.json", b"{}")
print("all calls ok")
"""
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'umount -l /proc && exec "$@"', "sh", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "all calls ok" in r.stdout


def test_sessions_live_archived_and_errors(root):
    """read_session reads live and gzip-archived sessions; list_sessions lists each once;
    a missing session is FileNotFoundError naming the path; a broken archive CorruptError."""
    root.write_atomic("chat_history/u1/sessions/live.json", b'{"live": 1}')
    archive = os.path.join(root.path, "chat_history/u1/archive")
    os.makedirs(archive)
    with gzip.open(os.path.join(archive, "old.json.gz"), "wb") as f:
        f.write(b'{"old": 1}')
    with open(os.path.join(archive, "broken.json.gz"), "wb") as f:
        f.write(b"not gzip")
    assert root.read_session("u1", "live") == b'{"live": 1}'
    assert root.read_session("u1", "old") == b'{"old": 1}'
    assert root.list_sessions("u1") == [
        ("broken", "archived"),
        ("live", "live"),
        ("old", "archived"),
    ]
    with pytest.raises(FileNotFoundError) as e:
        root.read_session("u1", "missing")
    assert "missing.json" in e.value.filename
    with pytest.raises(tmpa.CorruptError) as e:
        root.read_session("u1", "broken")
    assert e.value.path.endswith("broken.json.gz")


def test_interop_programs_read_what_python_wrote_and_back(root):
    """Events recorded from Python are compacted by tmpa-compact and still read back (now
    from _compacted.json); a session archived by tmpa-archive is read back from Python;
    an event written by the backend's old tmp + os.replace code is read too."""
    for i in range(20):
        root.record_event(event(i))
    day_dir = os.path.join(root.path, "token_stats", DAY)
    legacy = event(99)
    tmp = os.path.join(day_dir, "evt_e99.json.tmp")
    with open(tmp, "w") as f:
        json.dump(legacy, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(day_dir, "evt_e99.json"))
    r = subprocess.run([program("tmpa-compact"), "--root", root.path, "--day", DAY],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(day_dir)) == ["_compacted.json", "_summary.json"]
    got = root.day_events(DAY)
    assert len(got) == 21 and {e["id"] for e in got} == {f"e{i}" for i in list(range(20)) + [99]}
    assert root.summary(DAY)["events"] == 21

    body = json.dumps({"messages": ["x" * 100] * 50}).encode()
    p = root.write_atomic("chat_history/u2/sessions/s1.json", body)
    old = time.time() - 40 * 86400
    os.utime(p, (old, old))
    r = subprocess.run([program("tmpa-archive"), "--root", root.path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not os.path.exists(p)
    assert root.read_session("u2", "s1") == body
    assert root.list_sessions("u2") == [("s1", "archived")]


def test_notifications_archived_by_tmpa_archive_read_back_exactly(root):
    """300 notifications over two years, most acknowledged, delivered and acknowledged
    from Python (each an fsynced write): after tmpa-archive, the inbox holds only the unread and the recent, and
    every notification reads back exactly, with its ack state, whether live or archived."""
    now = time.time()
    want = {}
    stay = []
    for i in range(300):
        nid = f"n{i:05}"
        root.deliver("u1", {"n": i, "text": f"notification {i} \u00e9"}, id=nid)
        days = 730 - i * 730 // 300
        inbox = os.path.join(root.path, "notifications", "u1", "inbox", f"ntf_{nid}.json")
        os.utime(inbox, (now - days * 86400,) * 2)
        acked = i % 10 != 0
        if acked:
            ack = root.ack("u1", nid)
            os.utime(ack, (now - (days - 1) * 86400,) * 2)
        with open(inbox, "rb") as f:
            want[nid] = (f.read(), acked)
        if not acked or days - 1 < 90:
            stay.append(f"ntf_{nid}.json")
    r = subprocess.run([program("tmpa-archive"), "--root", root.path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    inbox = sorted(os.listdir(os.path.join(root.path, "notifications", "u1", "inbox")))
    assert inbox == stay
    listed = root.list_notifications("u1")
    assert [(n, a) for n, _, a in listed] == [(n, a) for n, (_, a) in sorted(want.items())]
    assert {w for _, w, _ in listed} == {"live", "archived"}
    for nid, (body, acked) in want.items():
        assert root.read_notification("u1", nid) == body
        assert root.is_acked("u1", nid) == acked
    assert root.unacked("u1") == sorted(n for n, (_, a) in want.items() if not a)
    with pytest.raises(FileNotFoundError):
        root.read_notification("u1", "never")


def test_python_ints_and_decimals_survive_compaction_exactly(root):
    """A Python int of 30 digits recorded through the library, and a Decimal of 20
    decimals written by the backend's own json code, come back exactly after
    tmpa-compact has merged them and deleted the loose files."""
    from decimal import Decimal

    big = 123456789012345678901234567890
    root.record_event(event(1, cost=big, nested={"v": [big, -big]}))
    day_dir = os.path.join(root.path, "token_stats", DAY)
    text = ('{"id":"e2","ts":"%sT10:00:02Z","user_id":"u1","model":"m",'
            '"prompt_tokens":1,"completion_tokens":1,"price":0.10000000000000000001,'
            '"tiny":1e-400}' % DAY)
    with open(os.path.join(day_dir, "evt_e2.json"), "w") as f:
        f.write(text)
    r = subprocess.run([program("tmpa-compact"), "--root", root.path, "--day", DAY],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(os.listdir(day_dir)) == ["_compacted.json", "_summary.json"]
    got = {e["id"]: e for e in root.day_events(DAY)}
    assert got["e1"]["cost"] == big and got["e1"]["nested"] == {"v": [big, -big]}
    with open(os.path.join(day_dir, "_compacted.json")) as f:
        doc = json.load(f, parse_float=Decimal)
    e2 = next(e for e in doc["events"] if e["id"] == "e2")
    assert e2["price"] == Decimal("0.10000000000000000001")
    assert e2["tiny"] == Decimal("1e-400")


def _writer_process(path, start, n):
    r = tmpa.Root(path)
    for i in range(start, start + n):
        r.record_event(event(i))


def test_threads_and_processes_write_while_compaction_runs(root):
    """Threads and processes record events while tmpa-compact runs again and again on the
    same day: afterwards every event is there exactly once and the summary is exact."""
    compact = program("tmpa-compact")
    stop = threading.Event()
    runs = []

    def compactor():
        while not stop.is_set():
            r = subprocess.run([compact, "--root", root.path, "--day", DAY],
                               capture_output=True, text=True)
            runs.append(r.returncode)

    def thread_writer(start, n):
        for i in range(start, start + n):
            root.record_event(event(i))

    c = threading.Thread(target=compactor)
    c.start()
    threads = [threading.Thread(target=thread_writer, args=(k * 300, 300)) for k in range(3)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer_process, args=(root.path, 1000 + k * 300, 300))
             for k in range(2)]
    for t in threads:
        t.start()
    for p in procs:
        p.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    stop.set()
    c.join()
    final = subprocess.run([compact, "--root", root.path, "--day", DAY],
                           capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    assert runs and all(code == 0 for code in runs), runs
    ids = [e["id"] for e in root.day_events(DAY)]
    want = {f"e{i}" for i in list(range(900)) + list(range(1000, 1600))}
    assert len(ids) == len(set(ids)) == len(want)
    assert set(ids) == want
    s = root.summary(DAY)
    assert s["events"] == 1500
    assert s["prompt_tokens"] == sum(list(range(900)) + list(range(1000, 1600)))


def test_a_flipped_bit_in_a_compacted_day_is_never_a_silent_change(root, tmp_path):
    """One bit flipped at every byte of a compacted day (structure, digits, strings, the
    checksums), read from Python: every read either returns exactly the original events
    with no problem, or names the damage; what it returns is never a changed event; the
    summary carries the same problems and the good _summary.json is never overwritten."""
    evs = [event(1, user="u1"), event(2, user="Zoë"), event(3, user="u1")]
    evs[1]["prompt_tokens"] = 6225
    for e in evs:
        root.record_event(e)
    r = subprocess.run([program("tmpa-compact"), "--root", root.path, "--day", DAY],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    day_dir = os.path.join(root.path, "token_stats", DAY)
    path = os.path.join(day_dir, "_compacted.json")
    with open(path, "rb") as f:
        good = f.read()
    assert good.startswith(b'{"format":2,')
    original = root.day_events(DAY)
    want = root.summary(DAY)
    assert want["problems"] == [] and want["events"] == 3
    with open(os.path.join(day_dir, "_summary.json"), "rb") as f:
        cached = f.read()
    as_json = lambda e: json.dumps(e, sort_keys=True)
    originals = {as_json(e) for e in original}
    noticed = 0
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 1 << (i % 8)
        with open(path, "r+b") as f:  # in place, as a disk's damage would be
            f.write(bad)
            f.truncate()
        read = root.read_day(DAY)
        got = [as_json(e) for e in read["events"]]
        assert set(got) <= originals, f"byte {i}: a changed event returned"
        s = root.summary(DAY)
        if read["problems"]:
            noticed += 1
            assert s["problems"] == read["problems"], f"byte {i}: the summary hides the damage"
        else:
            assert got == [as_json(e) for e in original], f"byte {i}: silently different"
        assert s["events"] == len(read["events"]), f"byte {i}"
        with open(os.path.join(day_dir, "_summary.json"), "rb") as f:
            assert f.read() == cached, f"byte {i}: the cache was rewritten"
    assert noticed == len(good)
    with open(path, "wb") as f:
        f.write(good)
    assert root.summary(DAY)["problems"] == []
