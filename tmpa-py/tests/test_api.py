"""The package as a backend developer meets it (issue 40): strict ack and deliver, a root
replaced under the service and reopen(), Root.create, arguments in Python's terms (ids
as str or int, days as str or date, bytes-like data), error messages that say each
thing once, inbox() in one call, __version__, and /etc/tmpa/tmpa.toml read before the
tree's own."""

import datetime
import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import types

import pytest

import tmpa


@pytest.fixture
def root(tmp_path):
    return tmpa.Root.create(tmp_path / "app")


def test_version_is_the_package_s():
    """__version__ is the installed distribution's version (the Cargo version)."""
    from importlib.metadata import version

    assert tmpa.__version__ == version("tmpa")
    assert tmpa.__version__.count(".") >= 2


def test_create_makes_a_root_idempotently(tmp_path):
    """Root.create makes the directory and the three data directories; again, it opens
    the same root and changes nothing; Root() of a plain directory says to create it."""
    path = tmp_path / "new"
    root = tmpa.Root.create(path)
    assert sorted(p.name for p in path.iterdir()) == ["chat_history", "notifications", "token_stats"]
    (path / "notifications" / "keep").write_text("x")
    assert tmpa.Root.create(str(path)).path == root.path
    assert (path / "notifications" / "keep").read_text() == "x"
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(tmpa.NotARootError):
        tmpa.Root(plain)
    with pytest.raises(FileNotFoundError):
        tmpa.Root.create(tmp_path / "no" / "parent")


def test_ack_of_an_id_never_delivered_is_file_not_found_and_creates_nothing(root):
    """FileNotFoundError naming the inbox path, nothing created (not even the user's
    directory); is_acked stays False."""
    with pytest.raises(FileNotFoundError) as e:
        root.ack("u1", "42")
    assert e.value.filename == str(root.path / "notifications/u1/inbox/ntf_42.json")
    assert e.value.errno == errno.ENOENT
    assert str(e.value).count(e.value.filename) == 1, str(e.value)
    assert not (root.path / "notifications" / "u1").exists()
    assert root.is_acked("u1", "42") is False


def test_ack_twice_keeps_the_first_receipt_and_returns_it(root):
    root.deliver("u1", {"id": 7, "t": "hi"})
    first = root.ack("u1", 7)
    assert first == root.path / "notifications/u1/ack/ntf_7.ack"
    data = first.read_bytes()
    assert root.ack("u1", "7") == first
    assert first.read_bytes() == data


def test_deliver_is_idempotent_with_the_same_value_and_refuses_another(root):
    """The same value again (key order and number spelling aside) is a no-op; another
    value is a FileExistsError naming the file; the first stays, acknowledged."""
    assert root.deliver("u1", {"b": 1.0, "a": [1, 2]}, id="n") == "n"
    path = root.path / "notifications/u1/inbox/ntf_n.json"
    before = path.read_bytes()
    assert root.deliver("u1", {"a": [1, 2], "b": 1.0}, id="n") == "n"
    root.ack("u1", "n")
    with pytest.raises(FileExistsError) as e:
        root.deliver("u1", {"a": "other"}, id="n")
    assert e.value.filename == str(path)
    assert str(e.value) == f"[Errno {errno.EEXIST}] already exists with different content: '{path}'"
    assert path.read_bytes() == before
    assert root.is_acked("u1", "n")
    assert sorted(os.listdir(path.parent)) == ["ntf_n.json"]


def test_deliver_keeps_big_numbers_exactly(root):
    """A 30-digit int is delivered as written (not through a float)."""
    big = 123456789012345678901234567890
    root.deliver("u1", {"n": big}, id=1)
    assert json.loads(root.read_notification("u1", 1)) == {"n": big}


def test_concurrent_deliveries_of_one_id_have_one_winner(root):
    """Eight threads deliver one id with eight values: one wins, seven get
    FileExistsError, the file holds the winner's value."""
    results = [None] * 8

    def deliver(i):
        try:
            root.deliver("u1", {"writer": i}, id="race")
            results[i] = "ok"
        except FileExistsError:
            results[i] = "exists"

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1, results
    assert results.count("exists") == 7, results
    winner = results.index("ok")
    assert json.loads(root.read_notification("u1", "race")) == {"writer": winner}


def test_ids_are_str_or_int_everywhere_and_nothing_else(root):
    """Every name argument takes a str or an int (its decimal text); a bool, a float or
    None is a TypeError saying what was expected; returned ids are str."""
    root.deliver(5, {"t": 1}, id=10)
    assert root.unacked(5) == ["10"] and root.unacked("5") == ["10"]
    assert root.read_notification(5, 10) == b'{"t":1}'
    assert root.is_acked("5", 10) is False
    root.ack(5, 10)
    assert root.is_acked(5, "10") is True
    root.write_session(5, 20, b"{}")
    assert root.read_session("5", "20") == b"{}"
    assert root.list_sessions(5) == [("20", "live")]
    for bad in (True, 1.5, None, b"5", ["5"]):
        with pytest.raises(TypeError) as e:
            root.ack("5", bad)
        assert "must be str or int" in str(e.value)
        with pytest.raises(TypeError):
            root.unacked(bad)
    with pytest.raises(TypeError):
        root.deliver("u1", {"id": 1.5})


def test_days_are_str_or_date(root):
    """A datetime.date is a day like its text; a datetime is refused (its day depends on
    a time zone); a bad day is a ValueError said once, in Python's quoting."""
    e = {"id": "a", "ts": "2026-11-23T10:00:00Z", "user_id": "u1", "model": "m",
         "prompt_tokens": 3, "completion_tokens": 4}
    root.record_event(e)
    day = datetime.date(2026, 11, 23)
    assert root.day_events(day) == [e] == root.day_events("2026-11-23")
    assert root.summary(day)["total_tokens"] == 7
    assert root.read_day(day)["events"] == [e]
    with pytest.raises(TypeError) as err:
        root.summary(datetime.datetime(2026, 11, 23, 10))
    assert ".date()" in str(err.value)
    with pytest.raises(ValueError) as err:
        root.summary("2026-13-45")
    assert str(err.value) == "invalid day '2026-13-45': not a calendar date"
    with pytest.raises(TypeError):
        root.day_events(20261123)


def test_data_is_bytes_like_and_a_str_says_to_encode_it(root):
    """write_session and write_atomic take bytes, bytearray and memoryview; a str is a
    TypeError that says to encode it."""
    root.write_session("u1", "s", bytearray(b"[1]"))
    assert root.read_session("u1", "s") == b"[1]"
    root.write_session("u1", "s", memoryview(b"[2]"))
    assert root.read_session("u1", "s") == b"[2]"
    with pytest.raises(TypeError) as e:
        root.write_session("u1", "s", "[3]")
    assert str(e.value) == "data must be a bytes-like object, not str (encode it: data.encode())"
    with pytest.raises(TypeError):
        root.write_atomic("chat_history/x.json", "{}")
    with pytest.raises(TypeError):
        tmpa.write_atomic(root.path / "x.json", "{}")


def test_record_event_takes_any_mapping(root):
    """A Mapping that is not a dict (a read-only view) is recorded; a list is a
    TypeError."""
    e = {"id": "m", "ts": "2026-11-23T10:00:00Z", "user_id": "u1", "model": "m",
         "prompt_tokens": 1, "completion_tokens": 2}
    root.record_event(types.MappingProxyType(e))
    assert root.day_events("2026-11-23") == [e]
    with pytest.raises(TypeError):
        root.record_event([("id", "x")])


def test_messages_name_the_path_once(root):
    """An OSError says its errno, what was being done and the path, each once."""
    with pytest.raises(FileNotFoundError) as e:
        root.read_session("u1", "nope")
    assert e.value.filename.endswith("chat_history/u1/sessions/nope.json")
    assert str(e.value).count("nope") == 1, str(e.value)
    assert "os error" not in str(e.value)
    with pytest.raises(ValueError) as v:
        root.unacked("a/b")
    assert str(v.value) == "invalid user id 'a/b': contains '/'"


def test_inbox_returns_ids_bytes_and_ack_state_in_one_call(root):
    """inbox() lists the live notifications with their exact bytes and ack state, by id;
    unacked_only, after and limit page it."""
    for i in range(6):
        root.deliver("u1", {"n": i}, id=f"{i:02}")
    root.ack("u1", "01")
    root.ack("u1", "04")
    items = root.inbox("u1")
    assert [(i["id"], i["acked"]) for i in items] == [
        ("00", False), ("01", True), ("02", False), ("03", False), ("04", True), ("05", False)]
    assert items[3]["body"] == b'{"n":3}' and isinstance(items[3]["body"], bytes)
    page = root.inbox("u1", unacked_only=True, limit=2)
    assert [i["id"] for i in page] == ["00", "02"]
    page = root.inbox("u1", unacked_only=True, after=page[-1]["id"], limit=2)
    assert [i["id"] for i in page] == ["03", "05"]
    assert root.inbox("u1", after=5) == []
    assert root.inbox("nobody") == []


def test_a_replaced_root_raises_root_replaced_until_reopened(tmp_path):
    """The root restored from a copy while the service runs: every call raises
    RootReplacedError (an OSError with ESTALE, not a FileNotFoundError), writes nothing;
    reopen() makes the same object, in every thread, work on the restored tree."""
    path = tmp_path / "app"
    root = tmpa.Root.create(path)
    root.deliver("u1", {"t": 1}, id="n1")
    root.write_session("u1", "s1", b"{}")
    old = tmp_path / "app.old"
    os.rename(path, old)
    shutil.copytree(old, path)
    shutil.rmtree(old)
    calls = [
        lambda: root.unacked("u1"),
        lambda: root.read_notification("u1", "n1"),
        lambda: root.ack("u1", "n1"),
        lambda: root.deliver("u1", {"t": 2}, id="n2"),
        lambda: root.read_session("u1", "s1"),
        lambda: root.list_sessions("u1"),
        lambda: root.summary("2026-11-23"),
        lambda: root.write_session("u1", "s2", b"{}"),
    ]
    for call in calls:
        with pytest.raises(tmpa.RootReplacedError) as e:
            call()
        assert isinstance(e.value, OSError)
        assert not isinstance(e.value, FileNotFoundError)
        assert e.value.errno == errno.ESTALE
        assert e.value.filename == str(root.path)
        assert "reopen()" in str(e.value)
    assert not (path / "notifications/u1/inbox/ntf_n2.json").exists()
    assert not (path / "chat_history/u1/sessions/s2.json").exists()
    root.reopen()
    seen = []
    t = threading.Thread(target=lambda: seen.append(root.unacked("u1")))
    t.start()
    t.join()
    assert seen == [["n1"]]
    assert root.read_session("u1", "s1") == b"{}"


def test_the_machine_s_tmpa_toml_comes_before_the_tree_s(tmp_path):
    """With /etc/tmpa/tmpa.toml naming a file:// store (in a private mount namespace whose
    /etc is a fresh tmpfs), the library reads archived sessions there, and not in the
    store the tree's own tmpa.toml names, as the programs do."""
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        if not os.environ.get("TMPA_ALLOW_SKIP"):
            pytest.fail("missing prerequisite: a private mount namespace (needs root); set TMPA_ALLOW_SKIP=1 to skip")
        pytest.skip("cannot make a private mount namespace here")
    machine, tree_store = tmp_path / "machine", tmp_path / "tree-store"
    for store, text in ((machine, b'"machine"'), (tree_store, b'"tree"')):
        (store / "u1").mkdir(parents=True)
        (store / "u1" / "s1.json.gz").write_bytes(gzip.compress(text))
    root_dir = tmp_path / "app"
    tmpa.Root.create(root_dir)
    (root_dir / "tmpa.toml").write_text(f'[archive]\nurl = "file://{tree_store}"\n')
    script = "import sys, tmpa; sys.stdout.write(tmpa.Root(sys.argv[1]).read_session('u1', 's1').decode())"
    setup = ("mount -t tmpfs -o mode=0755 none /etc && mkdir /etc/tmpa && "
             "printf '[archive]\\nurl = \"file://%s\"\\n' \"$STORE\" > /etc/tmpa/tmpa.toml && "
             'exec "$@"')
    run = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup, "sh",
         sys.executable, "-c", script, str(root_dir)],
        capture_output=True, text=True, env=dict(os.environ, STORE=str(machine)))
    assert run.returncode == 0, run.stderr
    assert run.stdout == '"machine"'
    assert tmpa.Root(root_dir).read_session("u1", "s1") == b'"tree"'
