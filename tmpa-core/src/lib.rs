//! # tmpa-core
//!
//! The library a backend embeds to keep its data as a TMPA tree of small JSON files, and
//! the shared core of the four maintenance programs (`tmpa-compact`, `tmpa-archive`,
//! `tmpa-tmpclean`, `tmpa-patrol`).
//!
//! - [`atomic`]: the one routine through which every file is written (tmp + fsync +
//!   rename + directory fsync), and [`temp_final_name`], which recognises its leftovers.
//! - [`Root`]: an opened, validated root; every path inside it is built from typed names
//!   ([`Day`], [`EventId`], [`UserId`], [`SessionId`], [`NotificationId`]) that cannot
//!   escape it.
//! - Events ([`Event`], [`Root::record_event`], [`Root::read_day`]), summaries
//!   ([`Summary`], [`Root::summary`]), notifications ([`Root::deliver`], [`Root::ack`],
//!   [`Root::unacked`]), sessions ([`Root::read_session`], [`Root::list_sessions`]).
//! - [`program`]: lock, run record, receipt, log lines and exit codes of the programs.
//!
//! Everything here is safe to call from many threads and processes at once, and while the
//! maintenance programs run: files are only ever created or replaced by rename, so a
//! reader sees a whole old or a whole new file.
//!
//! ```
//! use tmpa_core::{Event, Root};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("token_stats")).unwrap();
//! let root = Root::open(dir.path()).unwrap();
//! let e = Event::from_json(br#"{"id":"a1","ts":"2026-11-23T10:00:00Z","user_id":"u1",
//!   "model":"m","prompt_tokens":3,"completion_tokens":4}"#).unwrap();
//! root.record_event(&e).unwrap();
//! let day = root.read_day(e.day()).unwrap();
//! assert_eq!(day.events, vec![e]);
//! assert!(day.problems.is_empty());
//! ```

pub mod atomic;
pub mod day;
pub mod dirfd;
pub mod error;
pub mod event;
pub mod names;
pub mod notify;
pub mod par;
pub mod program;
pub mod root;
pub mod session;
pub mod summary;

pub use atomic::{AtomicFile, temp_final_name, write, write_new};
pub use day::{DayRead, DayScan, Problem};
pub use error::{Error, Result};
pub use event::Event;
pub use names::{Day, EventId, NotificationId, SessionId, UserId};
pub use root::Root;
pub use session::SessionLocation;
pub use summary::{Summary, Totals};

impl Root {
    /// Writes `bytes` atomically to `rel`, a relative path inside the root, creating missing
    /// directories (never through a symlink).
    ///
    /// # Errors
    /// [`Error::Unsafe`] when `rel` is absolute, holds `..`, or leads through a symlink;
    /// [`Error::Io`] naming the path.
    ///
    /// # Examples
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("chat_history")).unwrap();
    /// let root = tmpa_core::Root::open(dir.path()).unwrap();
    /// root.write_file("chat_history/u1/profile/p.json", b"{}").unwrap();
    /// assert!(root.write_file("../escape", b"x").is_err());
    /// ```
    pub fn write_file(
        &self,
        rel: impl AsRef<std::path::Path>,
        bytes: &[u8],
    ) -> Result<std::path::PathBuf> {
        let rel = rel.as_ref();
        let unsafe_path = |reason| Error::Unsafe {
            path: rel.to_path_buf(),
            reason,
        };
        if !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(unsafe_path("must be a relative path without '..'"));
        }
        let file_name = rel
            .file_name()
            .ok_or_else(|| unsafe_path("has no file name"))?;
        let parent = self
            .path()
            .join(rel.parent().unwrap_or(std::path::Path::new("")));
        let dir = self.hold_dir(&parent)?;
        atomic::write(dir.op(file_name), bytes).map_err(|e| dir.shown_error(e))?;
        Ok(dir.shown(file_name))
    }
}
