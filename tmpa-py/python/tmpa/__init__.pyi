"""Type stubs of tmpa (the Rust extension tmpa._tmpa)."""

import os
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

_Path = Union[str, "os.PathLike[str]"]
JSON = Any

class NotARootError(ValueError):
    """The directory holds none of notifications/, token_stats/, chat_history/."""

class CorruptError(ValueError):
    """A file does not follow its format; ``path`` names it."""
    path: str

class UnsafePathError(OSError):
    """A path leads through a symlink, through a non-directory, or out of the root."""
    path: str

class ConfigError(ValueError):
    """``{root}/tmpa.toml`` cannot be used (bad TOML, unknown key, bad archive URL)."""
    path: str

class StoreError(OSError):
    """The object store holding archived sessions failed (unreachable, slow, refusing)
    or cannot be used by this build; ``url`` names the object or store, ``kind`` says how
    ("unavailable", "denied", "unsupported", "too_large", ...)."""
    url: str
    kind: str

class Root:
    """An opened TMPA root. Safe to share between threads and to use from many processes,
    while the maintenance programs run."""

    def __init__(self, path: _Path) -> None:
        """Open ``path``. Raises NotARootError, or OSError if it cannot be resolved."""
    @property
    def path(self) -> Path:
        """The canonical path of the root."""
    def write_atomic(self, path: _Path, data: bytes) -> Path:
        """Write ``data`` to ``path`` (relative to the root, or absolute inside it)
        atomically and durably, creating directories (never through a symlink).
        Raises UnsafePathError for '..', symlinks or paths outside the root; OSError."""
    def record_event(self, event: dict) -> Path:
        """Write ``token_stats/{day}/evt_{id}.json`` atomically; return its path.
        Raises ValueError for a missing or mistyped field or an unsafe id."""
    def deliver(self, user: str, notification: JSON, id: Optional[Union[str, int]] = None) -> str:
        """Deliver ``notification`` to ``inbox/ntf_{id}.json``; ``id`` defaults to
        ``notification["id"]``. Return the id."""
    def ack(self, user: str, id: str) -> Path:
        """Write the read receipt ``ack/ntf_{id}.ack`` (idempotent); return its path."""
    def is_acked(self, user: str, id: str) -> bool:
        """Whether the notification has a read receipt (an archived one always has)."""
    def unacked(self, user: str) -> List[str]:
        """Ids of the user's notifications without a read receipt, sorted."""
    def read_notification(self, user: str, id: str) -> bytes:
        """A notification's bytes, live or archived by tmpa-archive (exactly as it was in
        the inbox). FileNotFoundError when neither exists."""
    def list_notifications(self, user: str) -> List[Tuple[str, str, bool]]:
        """``(id, "live" | "archived" | "stored", acked)`` for each of the user's
        notifications, sorted by id (``"stored"``: archived in the object store
        ``tmpa.toml`` names)."""
    def day_events(self, day: str) -> List[dict]:
        """The day's valid events (compacted and loose, each id once, by ts then id)."""
    def read_day(self, day: str) -> dict:
        """``{"events": [...], "problems": [{"path": str, "reason": str}]}``."""
    def summary(self, day: str) -> dict:
        """The day's summary; rebuilt from the events (and rewritten) when stale."""
    def write_session(self, user: str, session: str, data: bytes) -> Path:
        """Writes chat_history/{user}/sessions/{session}.json atomically; returns its path."""
    def read_session(self, user: str, session: str) -> bytes:
        """A chat session's bytes: the live file, else its newest archived version (a chat
        resumed after its archival has several), locally or in the object store that
        ``{root}/tmpa.toml`` names. FileNotFoundError when none; ConfigError, StoreError."""
    def list_sessions(self, user: str) -> List[Tuple[str, str]]:
        """``(session, "live" | "archived" | "stored")`` for each of the user's sessions,
        once: where ``read_session`` reads it (live, else where its newest version is)."""

def write_atomic(path: _Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (its directory must exist)."""

def temp_final_name(name: str) -> Optional[str]:
    """The final name a temporary name stands for (``a.json.tmp`` -> ``a.json``), else None."""
