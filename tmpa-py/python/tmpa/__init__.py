"""tmpa: durable, atomic access to a TMPA data tree, for Python backends.

The same Rust core (tmpa-core) that the maintenance programs use: every file is written
as a temporary in the same directory, fsynced, renamed over the final name and the
directory fsynced, so readers (and the programs running from cron) see a whole old or a
whole new file, never a part. The GIL is released during I/O.

    import tmpa
    root = tmpa.Root("/opt/app")
    root.record_event({"id": "a1", "ts": "2026-11-23T10:00:00Z", "user_id": "u1",
                       "model": "gpt-4o", "prompt_tokens": 120, "completion_tokens": 48})
    root.summary("2026-11-23")["total_tokens"]
"""

from ._tmpa import (
    ConfigError,
    CorruptError,
    NotARootError,
    Root,
    StoreError,
    UnsafePathError,
    temp_final_name,
    write_atomic,
)

__all__ = [
    "ConfigError",
    "CorruptError",
    "NotARootError",
    "Root",
    "StoreError",
    "UnsafePathError",
    "temp_final_name",
    "write_atomic",
]
