"""The shapes of what tmpa takes and returns, for type checkers (and for the backend's own
annotations: ``def handle(e: tmpa.Event) -> None``).

Every name here is a plain TypedDict or alias: at run time the values are ordinary dicts,
str, bytes and ints. Shapes follow docs/FORMAT.md; a field added to a format later is
added here too, so a checker that sees a new field sees it in the type.
"""

import datetime
import os
from typing import Any, Dict, List, Literal, TypedDict, Union

JSON = Any
"""A JSON value as Python's ``json`` module maps it (dict, list, str, int, float, bool,
None): what a notification is."""

Id = Union[str, int]
"""A user id, notification id or session name: a ``str``, or an ``int`` taken as its
decimal text (``7`` is ``"7"``). Returned ids are always ``str``."""

DayArg = Union[str, datetime.date]
"""A day: ``"YYYY-MM-DD"`` or a ``datetime.date`` (a ``datetime.datetime`` is refused:
its day depends on a time zone, pass its ``.date()``)."""

PathArg = Union[str, "os.PathLike[str]"]
"""A file system path."""

BytesArg = Union[bytes, bytearray, memoryview]
"""Data to write: a bytes-like object (a ``str`` is refused: encode it)."""


class Event(TypedDict):
    """A usage event (docs/FORMAT.md "Event"): the required fields. Other fields are kept
    and returned as written; to type them, extend it::

        class MyEvent(tmpa.Event, total=False):
            request_id: str
    """

    id: str
    ts: str
    user_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class Totals(TypedDict):
    """Counts over a set of events: a day's, one user's or one model's."""

    events: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _ProblemRequired(TypedDict):
    path: str
    kind: Literal["corrupt", "conflict", "unsafe", "unreadable"]
    reason: str


class Problem(_ProblemRequired, total=False):
    """A file a read could not use, and why. ``kind``: its content does not follow the
    format (``corrupt``), a loose event's id is compacted with other content
    (``conflict``), a symlink or an entry of the wrong kind (``unsafe``), it could not be
    read (``unreadable``). ``line`` (1-based), only when the problem is one line of the
    file: a damaged line of a ``_compacted.json``, whose other lines were counted."""

    line: int


class Summary(Totals):
    """A day's summary (docs/FORMAT.md ``_summary.json``): its totals, and the same per
    ``user_id`` and per ``model``. ``source`` is the cache's consistency stamp.
    ``problems``: what it could not count; empty, the totals cover every event of the
    day; otherwise only what could be read."""

    format: int
    day: str
    by_user: Dict[str, Totals]
    by_model: Dict[str, Totals]
    source: str
    problems: List[Problem]


class DayRead(TypedDict):
    """A day's valid events (compacted and loose, each id once, by ts then id) and the
    files that could not be used."""

    events: List[Event]
    problems: List[Problem]


class InboxItem(TypedDict):
    """A live notification: its id, whether it is acknowledged, and its exact bytes
    (``json.loads(item["body"])`` for the value)."""

    id: str
    acked: bool
    body: bytes



class BatchRewrite(TypedDict):
    """A notification batch that held other notifications too, rewritten without the
    forgotten ones: ``new`` (a path or an object URL) was read back and checked before
    ``old`` was deleted."""

    old: str
    new: str
    removed: int
    kept: int


class ForgetReport(TypedDict):
    """What ``delete_session``, ``delete_notification`` and ``forget_user`` removed, and
    where (every list sorted; all empty when nothing was left to forget). Paths are
    absolute; ``store_objects`` are object URLs. ``unreadable_events``: loose event files
    that could not be read, so whose user is unknown (kept: look at them)."""

    live_files: List[str]
    archive_versions: List[str]
    store_objects: List[str]
    batches_rewritten: List[BatchRewrite]
    batches_deleted: List[str]
    event_files: List[str]
    compacted_rewritten: List[str]
    events_erased: int
    summaries_removed: List[str]
    unreadable_events: List[str]
