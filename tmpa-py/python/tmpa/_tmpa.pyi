"""Type stubs of the Rust extension tmpa._tmpa (re-exported by tmpa)."""

from collections.abc import Mapping
from pathlib import Path
from typing import List, Literal, Optional, Tuple, final

from ._types import (
    JSON,
    BytesArg,
    DayArg,
    DayRead,
    Event,
    ForgetReport,
    Id,
    InboxItem,
    PathArg,
    Summary,
)

__version__: str
"""The package's version (the workspace's Cargo version)."""

__all__ = [
    "ConfigError",
    "CorruptError",
    "NotARootError",
    "Root",
    "RootReplacedError",
    "StoreError",
    "UnsafePathError",
    "__version__",
    "temp_final_name",
    "write_atomic",
]

class NotARootError(ValueError):
    """The directory holds none of notifications/, token_stats/, chat_history/."""

class CorruptError(ValueError):
    """A file does not follow its format; ``path`` names it."""

    path: str

class UnsafePathError(OSError):
    """A path leads through a symlink, through a non-directory, or out of the root."""

    path: str

class ConfigError(ValueError):
    """``tmpa.toml`` (``/etc/tmpa/tmpa.toml`` or the root's) cannot be used (bad TOML,
    unknown key, bad archive URL); ``path`` names it."""

    path: str

class StoreError(OSError):
    """The object store holding archived sessions failed (unreachable, slow, refusing)
    or cannot be used by this build; ``url`` names the object or store, ``kind`` says how
    ("unavailable", "denied", "unsupported", "too_large", ...)."""

    url: str
    kind: str

class RootReplacedError(OSError):
    """The root directory was removed or replaced (a restore) since this Root opened it:
    ``errno`` is ``errno.ESTALE``, ``filename`` the root. Not a FileNotFoundError: what
    was looked for may well exist in the new tree. Call ``Root.reopen()``."""

@final
class Root:
    """An opened TMPA root. Safe to share between threads and to use from many processes,
    while the maintenance programs run.

    Names (users, notification ids, sessions) are ``str`` or ``int``; days are
    ``"YYYY-MM-DD"`` or a ``datetime.date``; data to write is bytes-like. Another type is a
    TypeError; a value that cannot be a name or a day is a ValueError."""

    def __new__(cls, path: PathArg) -> "Root":
        """Open ``path``. Raises NotARootError (a ValueError) when it holds none of the
        data directories (``Root.create`` makes them), OSError when it cannot be opened."""
    @staticmethod
    def create(path: PathArg) -> "Root":
        """Make ``path`` a root and open it: creates the directory if missing (its parent
        must exist) and notifications/, token_stats/, chat_history/ in it, each durably.
        Idempotent: an existing root is opened as it is."""
    def reopen(self) -> None:
        """Open again the directory the root's path names now, after a restore replaced it
        (RootReplacedError): this object, in every thread, then works on the new tree."""
    @property
    def path(self) -> Path:
        """The canonical path of the root."""
    def write_atomic(self, path: PathArg, data: BytesArg) -> Path:
        """Write ``data`` to ``path`` (relative to the root, or absolute inside it)
        atomically and durably, creating directories (never through a symlink).
        Raises UnsafePathError for '..', symlinks or paths outside the root; OSError."""
    def record_event(self, event: Mapping[str, object]) -> Path:
        """Write ``token_stats/{day}/evt_{id}.json`` atomically; return its path.
        Recording the same event again is a no-op; another event with its id on that day
        is a FileExistsError. Raises ValueError for a missing or mistyped field or an
        unsafe id, TypeError for an event that is not a mapping."""
    def deliver(self, user: Id, notification: JSON, id: Optional[Id] = None) -> str:
        """Deliver ``notification`` (any JSON value) to ``inbox/ntf_{id}.json``; ``id``
        defaults to ``notification["id"]``. Return the id (a str).

        Idempotent with the same value (compared as JSON); another value under an existing
        id is a FileExistsError, and the first stays (with its read receipt). So is a
        read receipt left without its notification."""
    def ack(self, user: Id, id: Id) -> Optional[Path]:
        """Write the read receipt ``ack/ntf_{id}.ack`` (idempotent: the first is kept) and
        return its path; None for an archived notification (acknowledged already).
        FileNotFoundError for an id never delivered: nothing is created."""
    def is_acked(self, user: Id, id: Id) -> bool:
        """Whether the notification has a read receipt (an archived one always has; one
        never delivered has not)."""
    def unacked(self, user: Id) -> List[str]:
        """Ids of the user's live notifications without a read receipt, sorted."""
    def inbox(
        self,
        user: Id,
        *,
        unacked_only: bool = False,
        after: Optional[Id] = None,
        limit: Optional[int] = None,
    ) -> List[InboxItem]:
        """The user's live notifications, sorted by id, with their bytes and ack state, in
        one call: ``unacked_only``, ids ``after`` one (the last of the previous page), at
        most ``limit``. Archived notifications are not in the inbox."""
    def read_notification(self, user: Id, id: Id) -> bytes:
        """A notification's bytes, live or archived by tmpa-archive (exactly as it was in
        the inbox). FileNotFoundError when neither exists."""
    def list_notifications(
        self, user: Id
    ) -> List[Tuple[str, Literal["live", "archived", "stored"], bool]]:
        """``(id, "live" | "archived" | "stored", acked)`` for each of the user's
        notifications, sorted by id (``"stored"``: archived in the object store the
        configuration names)."""
    def day_events(self, day: DayArg) -> List[Event]:
        """The day's valid events (compacted and loose, each id once, by ts then id)."""
    def read_day(self, day: DayArg) -> DayRead:
        """The day's events and the files that could not be used (``problems``)."""
    def summary(self, day: DayArg) -> Summary:
        """The day's summary (the ``_summary.json`` format) plus ``"problems"``: what it
        could not count (a corrupt file, a damaged line of ``_compacted.json`` with its
        ``"line"``). Empty problems: the totals cover every event of the day."""
    def write_session(self, user: Id, session: Id, data: BytesArg) -> Path:
        """Write chat_history/{user}/sessions/{session}.json atomically; return its path.
        A str is a TypeError: encode it (``json.dumps(s).encode()``)."""
    def read_session(self, user: Id, session: Id) -> bytes:
        """A chat session's bytes: the live file, else its newest archived version (a chat
        resumed after its archival has several), locally or in the object store the
        configuration names. FileNotFoundError when none; ConfigError, StoreError."""
    def list_sessions(
        self, user: Id
    ) -> List[Tuple[str, Literal["live", "archived", "stored"]]]:
        """``(session, "live" | "archived" | "stored")`` for each of the user's sessions,
        once: where ``read_session`` reads it (live, else where its newest version is)."""

    def delete_session(
        self, user: Id, session: Id, *, lock_wait: float = 30.0
    ) -> ForgetReport:
        """Delete a chat session everywhere: live, every archived version locally and in
        the object store. Idempotent. Waits at most ``lock_wait`` seconds for a running
        tmpa-archive, then BlockingIOError (``.task``, ``.holder``; nothing changed)."""
    def delete_notification(
        self, user: Id, id: Id, *, lock_wait: float = 30.0
    ) -> ForgetReport:
        """Delete a notification, its ack and every archived copy (a batch holding others
        is rewritten without it, read back and checked, then the old one deleted).
        Idempotent; ``lock_wait`` as for ``delete_session``."""
    def forget_user(self, user: Id, *, lock_wait: float = 30.0) -> ForgetReport:
        """Forget a user (a data-deletion request): chat_history/{user}/ and
        notifications/{user}/ whole, the user's archives in the object store, and the
        user's usage events, loose and compacted (erased: past days' totals change).
        Idempotent: call again to finish one that was interrupted. Waits at most
        ``lock_wait`` seconds for a running tmpa-archive or tmpa-compact."""

def write_atomic(path: PathArg, data: BytesArg) -> None:
    """Write ``data`` to ``path`` atomically and durably (its directory must exist)."""

def temp_final_name(name: str) -> Optional[str]:
    """The final name a temporary name stands for (``a.json.tmp`` -> ``a.json``), else None."""
