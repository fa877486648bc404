"""The Python package reading chat sessions and acknowledged notifications that
tmpa-archive moved to an object store: a real S3-compatible server (moto, in this process on a free port of 127.0.0.1) and a
file:// store. Skipped, saying why, only when moto is not installed and
TMPA_ALLOW_SKIP is set (a developer's machine; CI never sets it)."""

import gzip
import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

import tmpa

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("TMPA_BIN_DIR", os.path.join(REPO, "target", "debug"))
OLD = time.time() - 40 * 86400


def program(name):
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "-q", "--bin", name], cwd=REPO, check=True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A moto server on 127.0.0.1; yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        if not os.environ.get("TMPA_ALLOW_SKIP"):
            pytest.fail(f"missing prerequisite: moto[server] ({e}); set TMPA_ALLOW_SKIP=1 to skip")
        pytest.skip(f"moto[server] is not installed ({e}): pip install \"moto[s3]\" flask flask-cors")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The store's standard environment, for this process (the library reads it at each
    call) and for the programs it starts."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3,
        "AWS_ALLOW_HTTP": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def create_bucket(endpoint, name):
    req = urllib.request.Request(
        f"{endpoint}/{name}",
        method="PUT",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"},
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 200


def tree_with_old_sessions(tmp_path, sessions):
    for d in ("notifications", "token_stats", "chat_history"):
        (tmp_path / d).mkdir()
    for name, data in sessions.items():
        p = tmp_path / "chat_history" / "u1" / "sessions" / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (OLD, OLD))
    return tmp_path


def test_reads_sessions_archived_in_s3(tmp_path, s3, s3_env):
    """After tmpa-archive moved sessions to S3, read_session returns their bytes and
    list_sessions says "stored"; a live session is still "live"."""
    create_bucket(s3, "py-reads")
    sessions = {"s1": json.dumps({"m": [1, 2]}).encode(), "s2": b"{\"m\":[]}"}
    root_dir = tree_with_old_sessions(tmp_path, sessions)
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://py-reads/host-a"\n')
    r = subprocess.run([program("tmpa-archive"), "--root", str(root_dir)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root_dir / "chat_history/u1/sessions/s1.json").exists()
    root = tmpa.Root(root_dir)
    root.write_session("u1", "s3", b"{}")
    for name, data in sessions.items():
        assert root.read_session("u1", name) == data
    assert root.list_sessions("u1") == [("s1", "stored"), ("s2", "stored"), ("s3", "live")]
    with pytest.raises(FileNotFoundError):
        root.read_session("u1", "nope")


def test_an_unreachable_store_is_a_store_error(tmp_path, monkeypatch):
    """A store that does not answer is a StoreError naming what was asked (the listing of
    the user's versions, the first request of a read past the live file and the local
    archive), not a missing session."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    root_dir = tree_with_old_sessions(tmp_path, {})
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://gone/host-a"\ntimeout_secs = 2\n')
    with pytest.raises(tmpa.StoreError) as e:
        tmpa.Root(root_dir).read_session("u1", "s1")
    assert e.value.url == "s3://gone/host-a/u1/versions/"
    assert e.value.kind == "unavailable"
    assert isinstance(e.value, OSError)


def test_reads_a_file_store_and_names_a_bad_config(tmp_path):
    """A file:// store is read the same way; a bad tmpa.toml is a ConfigError naming it."""
    store = tmp_path / "store"
    (store / "u1").mkdir(parents=True)
    (store / "u1" / "old.json.gz").write_bytes(gzip.compress(b"{\"old\":true}"))
    root_dir = tmp_path / "root"
    root_dir.mkdir()
    tree_with_old_sessions(root_dir, {})
    (root_dir / "tmpa.toml").write_text(f'[archive]\nurl = "file://{store}"\n')
    root = tmpa.Root(root_dir)
    assert root.read_session("u1", "old") == b"{\"old\":true}"
    assert root.list_sessions("u1") == [("old", "stored")]
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "ftp://x"\n')
    with pytest.raises(tmpa.ConfigError) as e:
        root.read_session("u1", "old")
    assert e.value.path == str(root_dir / "tmpa.toml")
    assert "unsupported scheme" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_reads_notifications_archived_in_s3(tmp_path, s3, s3_env):
    """After tmpa-archive moved old acknowledged notifications to S3, read_notification
    returns their exact bytes, is_acked says True, list_notifications says "stored"; the
    unread and the recently acknowledged stay live, and unacked lists the unread."""
    create_bucket(s3, "py-notes")
    root_dir = tree_with_old_sessions(tmp_path, {})
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://py-notes/host-a"\n')
    root = tmpa.Root(root_dir)
    for i in range(3):
        root.deliver("u1", {"text": f"hello {i}"}, id=f"n{i}")
    root.deliver("u1", {"text": "recent"}, id="recent")
    bodies = {n: root.read_notification("u1", n) for n in ("n0", "n1", "n2", "recent")}
    long_ago = time.time() - 200 * 86400
    for n in ("n0", "n1", "recent"):
        ack = root.ack("u1", n)
        if n != "recent":
            os.utime(ack, (long_ago, long_ago))
    r = subprocess.run([program("tmpa-archive"), "--root", str(root_dir)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    inbox = root_dir / "notifications" / "u1" / "inbox"
    assert sorted(p.name for p in inbox.iterdir()) == ["ntf_n2.json", "ntf_recent.json"]
    assert not (root_dir / "notifications" / "u1" / "archive").exists()
    for n, data in bodies.items():
        assert root.read_notification("u1", n) == data
    assert [root.is_acked("u1", n) for n in ("n0", "n1", "n2", "recent")] == [True, True, False, True]
    assert root.list_notifications("u1") == [
        ("n0", "stored", True), ("n1", "stored", True), ("n2", "live", False), ("recent", "live", True)]
    assert root.unacked("u1") == ["n2"]
    with pytest.raises(FileNotFoundError):
        root.read_notification("u1", "nope")


def test_ack_and_deliver_against_notifications_in_s3(tmp_path, s3, s3_env):
    """Notifications archived to S3: ack is a no-op success (None) that writes nothing;
    a receipt left behind by an interrupted archival makes deliver look in the store:
    the archived value again is a no-op, another is a FileExistsError naming the object;
    an id never delivered is a FileNotFoundError that creates nothing."""
    create_bucket(s3, "py-strict")
    root_dir = tree_with_old_sessions(tmp_path, {})
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://py-strict/host-a"\n')
    root = tmpa.Root(root_dir)
    for n in ("n0", "n1"):
        root.deliver("u1", {"text": n}, id=n)
        ack = root.ack("u1", n)
        assert ack is not None
        os.utime(ack, (OLD - 200 * 86400,) * 2)
    saved = (root_dir / "notifications/u1/ack/ntf_n1.ack").read_bytes()
    r = subprocess.run([program("tmpa-archive"), "--root", str(root_dir)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((root_dir / "notifications/u1/inbox").iterdir()) == []
    acks = root_dir / "notifications/u1/ack"
    assert list(acks.iterdir()) == []
    assert root.ack("u1", "n0") is None
    assert list(acks.iterdir()) == []
    # As if a run had stopped between deleting the inbox file and its receipt.
    (acks / "ntf_n1.ack").write_bytes(saved)
    assert root.deliver("u1", {"text": "n1"}, id="n1") == "n1"
    with pytest.raises(FileExistsError) as e:
        root.deliver("u1", {"text": "changed"}, id="n1")
    assert e.value.filename.startswith("s3://py-strict/host-a/u1/acked-")
    assert list((root_dir / "notifications/u1/inbox").iterdir()) == []
    assert root.read_notification("u1", "n1") == b'{"text":"n1"}'
    with pytest.raises(FileNotFoundError):
        root.ack("u1", "never")
    with pytest.raises(FileNotFoundError):
        root.ack("u2", "never")
    assert not (root_dir / "notifications/u2").exists()


def get_object(endpoint, bucket, key):
    req = urllib.request.Request(
        f"{endpoint}/{bucket}/{key}",
        headers={"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"},
    )
    with urllib.request.urlopen(req) as r:
        return r.read()


@pytest.mark.parametrize("tier", ["local", "file", "s3"])
def test_a_chat_resumed_after_archival_three_times_over(tmp_path, tier, request):
    """A chat archived, resumed by the backend, archived again, three times over (to the
    tree's archive/, a file:// store, S3): every tmpa-archive run exits 0 and adds a
    version beside the old ones; read_session returns the live session while there is
    one and the newest version after; list_sessions lists it once; every version stays
    readable."""
    (tmp_path / "root").mkdir()
    root_dir = tree_with_old_sessions(tmp_path / "root", {})
    env = dict(os.environ)
    version = None
    if tier == "file":
        store = tmp_path / "store"
        store.mkdir()
        (root_dir / "tmpa.toml").write_text(f'[archive]\nurl = "file://{store}"\n')
        version = lambda n: store / "u1" / ("chat.json.gz" if n == 1 else f"versions/{n}/chat.json.gz")
    elif tier == "s3":
        s3 = request.getfixturevalue("s3")
        env = {**env, **request.getfixturevalue("s3_env")}
        create_bucket(s3, "py-resumed")
        (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://py-resumed/host-a"\n')
    else:
        archive = root_dir / "chat_history" / "u1" / "archive"
        version = lambda n: archive / ("chat.json.gz" if n == 1 else f"versions/{n}/chat.json.gz")
    where = {"local": "archived", "file": "stored", "s3": "stored"}[tier]
    root = tmpa.Root(root_dir)
    written = []
    for round_ in range(4):
        data = json.dumps({"messages": list(range(3 + 2 * round_))}).encode()
        p = root.write_session("u1", "chat", data)
        os.utime(p, (OLD, OLD))
        assert root.read_session("u1", "chat") == data
        written.append(data)
        r = subprocess.run([program("tmpa-archive"), "--root", str(root_dir)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.exists(p)
        assert root.read_session("u1", "chat") == data
        assert root.list_sessions("u1") == [("chat", where)]
        for n, old in enumerate(written, start=1):
            if tier == "s3":
                key = "host-a/u1/" + ("chat.json.gz" if n == 1 else f"versions/{n}/chat.json.gz")
                got = gzip.decompress(get_object(s3, "py-resumed", key))
            else:
                got = gzip.decompress(version(n).read_bytes())
            assert got == old, n


def test_forget_removes_what_tmpa_archive_put_in_s3(tmp_path, s3, s3_env):
    """After tmpa-archive moved a user's sessions and notifications to S3: delete_session
    removes the session's object, delete_notification rewrites the stored batch without
    the notification (the others still read back), forget_user removes the rest; the
    reports say so, and a second forget finds nothing."""
    create_bucket(s3, "py-forget")
    root_dir = tree_with_old_sessions(tmp_path, {"s1": b"{\"a\":1}", "s2": b"{\"b\":2}"})
    (root_dir / "tmpa.toml").write_text('[archive]\nurl = "s3://py-forget/host-a"\n')
    root = tmpa.Root(root_dir)
    for n in ("n0", "n1", "n2"):
        root.deliver("u1", {"text": n}, id=n)
        ack = root.ack("u1", n)
        assert ack is not None
        os.utime(ack, (OLD - 200 * 86400,) * 2)
    r = subprocess.run([program("tmpa-archive"), "--root", str(root_dir)],
                       capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    assert root.list_sessions("u1") == [("s1", "stored"), ("s2", "stored")]

    report = root.delete_session("u1", "s1")
    assert report["store_objects"] == ["s3://py-forget/host-a/u1/s1.json.gz"]
    with pytest.raises(FileNotFoundError):
        root.read_session("u1", "s1")
    assert root.read_session("u1", "s2") == b"{\"b\":2}"

    report = root.delete_notification("u1", "n1")
    [rewrite] = report["batches_rewritten"]
    assert (rewrite["removed"], rewrite["kept"]) == (1, 2)
    assert rewrite["old"].startswith("s3://py-forget/host-a/u1/acked-3-")
    assert rewrite["new"].startswith("s3://py-forget/host-a/u1/acked-2-")
    assert root.list_notifications("u1") == [("n0", "stored", True), ("n2", "stored", True)]
    assert json.loads(root.read_notification("u1", "n2")) == {"text": "n2"}
    with pytest.raises(FileNotFoundError):
        root.read_notification("u1", "n1")

    report = root.forget_user("u1")
    assert report["store_objects"] == sorted([
        "s3://py-forget/host-a/u1/s2.json.gz",
        rewrite["new"],
    ])
    assert root.list_sessions("u1") == [] and root.list_notifications("u1") == []
    assert all(not v for v in root.forget_user("u1").values())
