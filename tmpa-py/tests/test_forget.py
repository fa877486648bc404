"""Forgetting (issue 40): Root.delete_session, delete_notification and forget_user remove
the data live and in the local archives (every session version; a notification batch
holding others rewritten without it), erase the user's usage events (summary updated),
return a ForgetReport, are idempotent, refuse bad names as every call does, and name the
maintenance job whose lock they waited for in vain."""

import errno
import fcntl
import gzip

import pytest

import tmpa


@pytest.fixture
def root(tmp_path):
    return tmpa.Root.create(tmp_path / "app")


REPORT_KEYS = {
    "live_files",
    "archive_versions",
    "store_objects",
    "batches_rewritten",
    "batches_deleted",
    "event_files",
    "compacted_rewritten",
    "events_erased",
    "summaries_removed",
    "unreadable_events",
}


def empty(report: tmpa.ForgetReport) -> bool:
    return all(not v for v in report.values())


def test_delete_session_removes_live_and_every_archived_version(root):
    """The live file and versions 1 and 2 go; another session stays; twice is fine."""
    root.write_session("u1", "s1", b'{"v":3}')
    archive = root.path / "chat_history/u1/archive"
    (archive / "versions/2").mkdir(parents=True)
    (archive / "s1.json.gz").write_bytes(gzip.compress(b'{"v":1}'))
    (archive / "versions/2/s1.json.gz").write_bytes(gzip.compress(b'{"v":2}'))
    root.write_session("u1", "s2", b"{}")
    report = root.delete_session("u1", "s1")
    assert set(report) == REPORT_KEYS
    assert report["live_files"] == [str(root.path / "chat_history/u1/sessions/s1.json")]
    assert sorted(report["archive_versions"]) == [
        str(archive / "s1.json.gz"),
        str(archive / "versions/2/s1.json.gz"),
    ]
    with pytest.raises(FileNotFoundError):
        root.read_session("u1", "s1")
    assert root.list_sessions("u1") == [("s2", "live")]
    assert empty(root.delete_session("u1", "s1"))


def test_delete_notification_removes_it_and_its_ack(root):
    """The inbox file and its ack go; another notification stays; an int id works."""
    root.deliver("u1", {"text": "hi"}, id=7)
    root.ack("u1", 7)
    root.deliver("u1", {"text": "other"}, id="8")
    report = root.delete_notification("u1", 7)
    assert len(report["live_files"]) == 2
    assert not root.is_acked("u1", "7")
    with pytest.raises(FileNotFoundError):
        root.read_notification("u1", "7")
    assert root.unacked("u1") == ["8"]
    assert empty(root.delete_notification("u1", "7"))


def test_forget_user_erases_events_and_updates_the_summary(root):
    """Every event of u1 goes (the summary drops it); u2's stay; u1's trees go."""
    for i, user in enumerate(["u1", "u2", "u1"]):
        root.record_event(
            {
                "id": f"e{i}",
                "ts": f"2026-11-23T1{i}:00:00Z",
                "user_id": user,
                "model": "m",
                "prompt_tokens": 10 * (i + 1),
                "completion_tokens": 1,
            }
        )
    assert root.summary("2026-11-23")["events"] == 3
    root.write_session("u1", "s", b"{}")
    root.deliver("u1", 1, id="n1")
    report = root.forget_user("u1")
    assert report["events_erased"] == 2
    assert len(report["event_files"]) == 2
    summary = root.summary("2026-11-23")
    assert summary["events"] == 1 and summary["prompt_tokens"] == 20
    assert "u1" not in summary["by_user"]
    assert [e["user_id"] for e in root.day_events("2026-11-23")] == ["u2"]
    assert not (root.path / "chat_history/u1").exists()
    assert not (root.path / "notifications/u1").exists()
    assert empty(root.forget_user("u1"))


def test_bad_names_and_waits_are_refused(root):
    with pytest.raises(ValueError):
        root.forget_user("a/b")
    with pytest.raises(ValueError):
        root.delete_session("u1", "..")
    with pytest.raises(TypeError):
        root.delete_notification("u1", 1.5)
    with pytest.raises(ValueError):
        root.forget_user("u1", lock_wait=-1)


def test_a_held_maintenance_lock_is_a_blocking_io_error_naming_the_job(root):
    """A running tmpa-archive (its lock held, its note written) past lock_wait:
    BlockingIOError naming the lock, the task and the holder; nothing changed."""
    root.write_session("u1", "s", b"{}")
    locks = root.path / ".tmpa/locks"
    locks.mkdir(parents=True)
    (locks / "archive_history.holder").write_text("pid 4242 since 2026-11-25T02:30:00Z\n")
    with open(locks / "archive_history.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError) as e:
            root.delete_session("u1", "s", lock_wait=0.2)
    assert e.value.errno == errno.EAGAIN
    assert e.value.filename == str(locks / "archive_history.lock")
    assert e.value.task == "archive_history"
    assert e.value.holder == "pid 4242 since 2026-11-25T02:30:00Z"
    assert root.read_session("u1", "s") == b"{}"
    assert len(root.delete_session("u1", "s", lock_wait=0)["live_files"]) == 1


def test_the_report_is_typed():
    """The report's keys are exactly ForgetReport's; the TypedDicts are exported."""
    assert "ForgetReport" in tmpa.__all__ and "BatchRewrite" in tmpa.__all__
    assert set(tmpa.ForgetReport.__annotations__) == REPORT_KEYS
