//! What is decided for each temporary, and why.

use serde::Serialize;
use tmpa_core::maintenance::Kind;
use tmpa_maint::NotOpenProof;

/// Why a temporary is kept, or that it may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Old, unchanged, final file present: it may go once proven not open (`Some`: proven,
    /// and how).
    Stale(Option<NotOpenProof>),
    /// Deleted by this run, proven not open as said.
    Deleted(NotOpenProof),
    /// Changed (by mtime or ctime) within `--older-than`: a write may be in progress.
    Young,
    /// Some process has it open or mapped (the kernel refused a lease, or `/proc` shows
    /// it open).
    Open,
    /// Some process holds a lock on it (`/proc/locks`).
    Locked,
    /// Not proven closed: no file lease can be had here, and `/proc` is not accepted as
    /// proof (the why, in words).
    Unproven(String),
    /// Old, but its final file is missing (`None`) or not a regular file (its kind): it
    /// may hold the only copy of data. Never deleted; needs a look.
    Orphan(Option<Kind>),
    /// Not a regular file (symlink, fifo, directory, ...): never touched.
    NotRegular(Kind),
    /// On another file system than the root (a file bind-mounted into the tree).
    OtherFs,
    /// Under `chat_history/{user}/profile/`, which maintenance never touches (docs/FORMAT.md "The tree").
    Protected,
    /// Changed, moved, replaced or opened between the decision and the deletion: kept.
    Changed(String),
    /// The deletion (or the checks just before it) failed with an I/O error.
    Failed(String),
    /// A plan is being applied and does not list it: left for the next run.
    NotInPlan,
}

/// The stable code of a reason, for reports and JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// [`Reason::Stale`] and [`Reason::Deleted`].
    Stale,
    /// [`Reason::Young`].
    Young,
    /// [`Reason::Open`].
    Open,
    /// [`Reason::Locked`].
    Locked,
    /// [`Reason::Unproven`].
    Unproven,
    /// [`Reason::Orphan`].
    Orphan,
    /// [`Reason::NotRegular`].
    NotRegular,
    /// [`Reason::OtherFs`].
    OtherFs,
    /// [`Reason::Protected`].
    Protected,
    /// [`Reason::Changed`].
    Changed,
    /// [`Reason::Failed`].
    Failed,
    /// [`Reason::NotInPlan`].
    NotInPlan,
}

impl ReasonCode {
    /// The code as text (what `--json` prints).
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Stale => "stale",
            ReasonCode::Young => "young",
            ReasonCode::Open => "open",
            ReasonCode::Locked => "locked",
            ReasonCode::Unproven => "unproven",
            ReasonCode::Orphan => "orphan",
            ReasonCode::NotRegular => "not_regular",
            ReasonCode::OtherFs => "other_fs",
            ReasonCode::Protected => "protected",
            ReasonCode::Changed => "changed",
            ReasonCode::Failed => "failed",
            ReasonCode::NotInPlan => "not_in_plan",
        }
    }
}

impl Reason {
    /// Its stable code.
    pub fn code(&self) -> ReasonCode {
        match self {
            Reason::Stale(_) | Reason::Deleted(_) => ReasonCode::Stale,
            Reason::Young => ReasonCode::Young,
            Reason::Open => ReasonCode::Open,
            Reason::Locked => ReasonCode::Locked,
            Reason::Unproven(_) => ReasonCode::Unproven,
            Reason::Orphan(_) => ReasonCode::Orphan,
            Reason::NotRegular(_) => ReasonCode::NotRegular,
            Reason::OtherFs => ReasonCode::OtherFs,
            Reason::Protected => ReasonCode::Protected,
            Reason::Changed(_) => ReasonCode::Changed,
            Reason::Failed(_) => ReasonCode::Failed,
            Reason::NotInPlan => ReasonCode::NotInPlan,
        }
    }

    /// Whether an operator should look at it (exit 1, or 4 for a failure).
    pub fn needs_look(&self) -> bool {
        matches!(
            self,
            Reason::Orphan(_) | Reason::Unproven(_) | Reason::Changed(_) | Reason::Failed(_)
        )
    }

    /// What proved it not open, when something did.
    pub fn proof(&self) -> Option<NotOpenProof> {
        match self {
            Reason::Stale(p) => *p,
            Reason::Deleted(p) => Some(*p),
            _ => None,
        }
    }

    /// The reason in words (stable from run to run: no times, no pids). `older` is
    /// `--older-than` as text (`24h`).
    pub fn detail(&self, older: &str) -> String {
        let proof =
            |p: &Option<NotOpenProof>| p.map_or("not proven closed yet", NotOpenProof::words);
        match self {
            Reason::Stale(p) => format!("unchanged for at least {older}, final file present, {}", proof(p)),
            Reason::Deleted(p) => format!(
                "unchanged for at least {older}, final file present, {}; receipt written",
                p.words()
            ),
            Reason::Young => format!("changed within {older} (a write may be in progress)"),
            Reason::Open => "open or mapped by a process (the kernel refused a file lease, or /proc shows it open)".into(),
            Reason::Locked => "locked by a running process".into(),
            Reason::Unproven(why) => format!("cannot prove it is closed: {why} (needs a look)"),
            Reason::Orphan(None) => {
                "no final file: may hold the only copy of its data (kept, needs a look)".into()
            }
            Reason::Orphan(Some(k)) => format!(
                "its final file is {}, not a regular file (kept, needs a look)",
                k.words()
            ),
            Reason::NotRegular(k) => format!("is {} (never followed or deleted)", k.words()),
            Reason::OtherFs => "on another file system than the root (not touched)".into(),
            Reason::Protected => "in a profile/ directory, which maintenance never touches".into(),
            Reason::Changed(s) => s.clone(),
            Reason::Failed(s) => format!("not deleted: {s}"),
            Reason::NotInPlan => "not in the plan being applied (left for the next run)".into(),
        }
    }
}
