"""Type-checked by mypy --strict in tests/check.sh (not run): what a backend writes with
tmpa's types must pass the checker. A TypedDict event is a Mapping[str, object]; the
values tmpa returns are typed (TypedDicts, str ids, bytes)."""

import datetime
from typing import List

import tmpa


class MyEvent(tmpa.Event, total=False):
    request_id: str


def record(root: tmpa.Root) -> None:
    e: MyEvent = {"id": "a", "ts": "2026-11-23T10:00:00Z", "user_id": "u1", "model": "m",
                  "prompt_tokens": 3, "completion_tokens": 4, "request_id": "r"}
    root.record_event(e)
    s: tmpa.Summary = root.summary(datetime.date(2026, 11, 23))
    total: int = s["total_tokens"] + s["by_user"]["u1"]["events"]
    day: tmpa.DayRead = root.read_day("2026-11-23")
    kinds: List[str] = [p["kind"] for p in day["problems"]]
    ids: List[str] = [ev["id"] for ev in root.day_events("2026-11-23")]
    print(total, kinds, ids)


def notify(root: tmpa.Root) -> None:
    root.deliver(7, {"id": 1, "text": "hi"})
    for item in root.inbox(7, unacked_only=True, limit=50):
        body: bytes = item["body"]
        nid: str = item["id"]
        print(nid, body, item["acked"])
    receipt = root.ack("7", 1)
    print(receipt.name if receipt is not None else "archived")
    try:
        root.unacked(7)
    except tmpa.RootReplacedError:
        root.reopen()


def forget(root: tmpa.Root) -> None:
    report: tmpa.ForgetReport = root.forget_user("u1", lock_wait=5.0)
    erased: int = report["events_erased"]
    for b in report["batches_rewritten"]:
        rewrite: tmpa.BatchRewrite = b
        print(rewrite["old"], rewrite["new"], rewrite["kept"])
    gone: List[str] = root.delete_session("u1", "s1")["archive_versions"]
    acks: List[str] = root.delete_notification(7, 1)["live_files"]
    try:
        root.forget_user(7, lock_wait=0)
    except BlockingIOError as e:
        print(e.filename)
    print(erased, gone, acks)
