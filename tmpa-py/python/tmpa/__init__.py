"""tmpa: durable, atomic access to a TMPA data tree, for Python backends.

The same Rust core (tmpa-core) that the maintenance programs use: every file is written
as a temporary in the same directory, fsynced (on ext4 with a journal and XFS: written
back, the directory's journal commit covering it), renamed over the final name and the
directory fsynced, so readers (and the programs running from cron) see a whole old or a
whole new file, never a part. The GIL is released during I/O.

    import tmpa
    root = tmpa.Root.create("/opt/app")      # or tmpa.Root("/opt/app") for an existing root
    root.record_event({"id": "a1", "ts": "2026-11-23T10:00:00Z", "user_id": "u1",
                       "model": "gpt-4o", "prompt_tokens": 120, "completion_tokens": 48})
    root.summary("2026-11-23")["total_tokens"]

A root restored from a backup while the service runs: calls raise RootReplacedError (an
OSError, errno ESTALE, never a FileNotFoundError); ``root.reopen()`` opens the restored
tree for every thread using ``root``.

A data-deletion request: ``root.forget_user("u1")`` removes the user's sessions,
notifications and usage events everywhere (live, local archives, the object store) and
returns a ``ForgetReport``; ``delete_session`` and ``delete_notification`` remove one.
"""

from ._tmpa import (
    ConfigError,
    CorruptError,
    NotARootError,
    Root,
    RootReplacedError,
    StoreError,
    UnsafePathError,
    __version__,
    temp_final_name,
    write_atomic,
)
from ._types import (
    BatchRewrite,
    BytesArg,
    DayArg,
    DayRead,
    Event,
    ForgetReport,
    Id,
    InboxItem,
    JSON,
    PathArg,
    Problem,
    Summary,
    Totals,
)

__all__ = [
    "BatchRewrite",
    "BytesArg",
    "ConfigError",
    "CorruptError",
    "DayArg",
    "DayRead",
    "Event",
    "ForgetReport",
    "Id",
    "InboxItem",
    "JSON",
    "NotARootError",
    "PathArg",
    "Problem",
    "Root",
    "RootReplacedError",
    "StoreError",
    "Summary",
    "Totals",
    "UnsafePathError",
    "__version__",
    "temp_final_name",
    "write_atomic",
]
