//! Exit statuses (docs/OPERATIONS.md "Exit codes"), decided from error kinds.

use std::path::PathBuf;
use std::process::ExitCode;

use tmpa_core::maintenance::{line_text, path_text};

/// How a run ended (docs/OPERATIONS.md "Exit codes"). Higher is worse; a run reports the worst it met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum ExitStatus {
    /// 0: done, nothing to report.
    Ok,
    /// 1: finished, but something needs a look; nothing unverified was deleted.
    NeedsLook,
    /// 2: usage or configuration error; nothing written.
    Usage,
    /// 3: another run of the same program holds the lock on this root.
    Locked,
    /// 4: any other failure (I/O, no space).
    Failure,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Ok => 0,
            ExitStatus::NeedsLook => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Locked => 3,
            ExitStatus::Failure => 4,
        }
    }

    /// The worse of two statuses.
    #[must_use]
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        self.max(other)
    }

    /// A few words for the log's last line.
    pub fn describe(self) -> &'static str {
        match self {
            ExitStatus::Ok => "ok",
            ExitStatus::NeedsLook => "needs a look",
            ExitStatus::Usage => "usage error",
            ExitStatus::Locked => "locked by another run",
            ExitStatus::Failure => "failure",
        }
    }
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s.code())
    }
}

/// Why a program could not start its run.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The root (or the state directory) could not be opened or used.
    #[error(transparent)]
    Core(#[from] tmpa_core::Error),
    /// Another run holds the program's lock on this root.
    #[error("{}: lock held by {holder}", path_text(path))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it ("pid 123 since ..."), or "unknown".
        holder: String,
    },
    /// A file that decides what the run does is one that another user could have
    /// written or named (the lock file, the archive configuration): refused, nothing
    /// done.
    #[error("{}: refused: {why}", path_text(path))]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why it is not trusted.
        why: crate::trust::Distrust,
    },
    /// The lock file belongs to another user than this program's, and this program's user
    /// may not even read it (a lock file is only ever opened for reading, so any other
    /// is used as it is, whoever made it).
    #[error(
        "{}: owned by uid {owner}, not by this program's user (uid {runner}): a run as \
         another user left it. Give it to this user while no run holds it (sudo chown \
         {runner} {}), or run as uid {owner}",
        path_text(path),
        path_text(path)
    )]
    ForeignLock {
        /// The lock file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This program's user.
        runner: u32,
    },
    /// The flags contradict each other or the root's configuration.
    #[error("{0}")]
    Usage(String),
}

impl StartError {
    /// The status a start-up error maps to: a root that cannot be opened or is not a root
    /// and bad names are usage errors (2), a held lock is 3, anything else 4.
    pub fn status(&self) -> ExitStatus {
        match self {
            StartError::Core(
                tmpa_core::Error::NotRoot { .. }
                | tmpa_core::Error::OpenRoot { .. }
                | tmpa_core::Error::InvalidName { .. },
            )
            | StartError::Untrusted { .. }
            | StartError::ForeignLock { .. }
            | StartError::Usage(_) => ExitStatus::Usage,
            StartError::Locked { .. } => ExitStatus::Locked,
            StartError::Core(_) => ExitStatus::Failure,
        }
    }

    /// The whole cause chain on one line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        if let StartError::Core(e) = self {
            // `transparent`: the core error's own chain.
            s = e.chain();
            cur = None;
        }
        while let Some(e) = cur {
            s.push_str(": ");
            s.push_str(&e.to_string());
            cur = e.source();
        }
        s
    }
}

/// Ends a program: prints a start-up error with its whole cause chain on stderr and maps
/// the outcome to the process exit code. The only place a program's exit code is decided.
pub fn exit(program: &str, outcome: Result<ExitStatus, StartError>) -> ExitCode {
    match outcome {
        Ok(status) => status.into(),
        Err(e) => {
            eprintln!("{program}: error: {}", line_text(&e.chain()));
            e.status().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Start-up errors map to their documented statuses by kind, never by message text.
    #[test]
    fn start_errors_map_by_kind() {
        let not_root = StartError::Core(tmpa_core::Error::NotRoot {
            path: PathBuf::from("/x"),
        });
        assert_eq!(not_root.status(), ExitStatus::Usage);
        let locked = StartError::Locked {
            path: PathBuf::from("/x/.tmpa/locks/compact_events.lock"),
            holder: "pid 1".into(),
        };
        assert_eq!(locked.status(), ExitStatus::Locked);
        assert!(locked.chain().contains("pid 1"));
        let io = StartError::Core(tmpa_core::Error::io(
            "open",
            "/x/.tmpa",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ));
        assert_eq!(io.status(), ExitStatus::Failure);
        assert_eq!(StartError::Usage("bad".into()).status(), ExitStatus::Usage);
    }

    /// The worst of two statuses is the higher code; the codes are the documented ones.
    #[test]
    fn worst_and_codes() {
        let all = [
            ExitStatus::Ok,
            ExitStatus::NeedsLook,
            ExitStatus::Usage,
            ExitStatus::Locked,
            ExitStatus::Failure,
        ];
        assert_eq!(all.map(ExitStatus::code), [0, 1, 2, 3, 4]);
        assert_eq!(
            ExitStatus::NeedsLook.worst(ExitStatus::Failure),
            ExitStatus::Failure
        );
        assert_eq!(
            ExitStatus::Failure.worst(ExitStatus::Ok),
            ExitStatus::Failure
        );
    }
}
