//! What the unit tests of tmpa-maint share: a tree with one day directory, a run of a
//! test program on it, the receipt line of a file.

use tmpa_core::Root;
use tmpa_core::maintenance::{Dir, path_text};

use crate::args::Mode;
use crate::receipt::{Deletion, Proof};
use crate::record::Task;
use crate::run::{Run, Setup};

/// The day directory of [`tree`], below the root.
pub(crate) const DAY: &str = "token_stats/2026-11-01";

/// A root with one day directory, [`DAY`].
pub(crate) fn tree() -> (tempfile::TempDir, Root) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join(DAY)).unwrap();
    let root = Root::open(t.path()).unwrap();
    (t, root)
}

/// A run of `task` by `tmpa-test` on `root`, with nothing in its setup.
pub(crate) fn start(root: &Root, task: Task, mode: Mode) -> Run {
    Run::start("tmpa-test", task, root.clone(), mode, Setup::default()).unwrap()
}

/// The receipt line of `name` in `dir` as it is now, its event held by a compacted file.
pub(crate) fn deletion(dir: &Dir, name: &str) -> Deletion {
    let stamp = dir.stat(name).unwrap().unwrap().stamp;
    Deletion {
        file: path_text(&dir.join(name)),
        bytes: stamp.size,
        sha256: "00".into(),
        stamp,
        held_by: "elsewhere".into(),
        proof: Proof::CompactedEvent {
            day: "2026-11-01".into(),
            held_events: 1,
        },
    }
}
