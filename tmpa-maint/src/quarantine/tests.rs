//! The quarantine's recovery, tested on real trees: a live run's directory left alone,
//! a killed run's finished at each step of its delete step, what a receipt does not prove
//! put back or kept, and the directories the recovery does not believe.

use super::*;
use std::os::unix::fs::PermissionsExt;

const TASK: Task = Task::CompactEvents;

use crate::testing::{deletion, tree};

/// A killed run's quarantine directory `id` holding `evt_{id}.json` of day 2026-11-01,
/// made as the run makes it (mode 0700).
fn left_by_a_killed_run(t: &tempfile::TempDir, id: &str) -> PathBuf {
    let run_dir = t
        .path()
        .join(".tmpa/quarantine/in-flight/compact_events")
        .join(id);
    let day = run_dir.join("token_stats/2026-11-01");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(day.join(format!("evt_{id}.json")), "{}").unwrap();
    run_dir
}

#[test]
fn a_live_run_s_directory_is_left_alone_and_a_dead_one_s_put_back() {
    let (t, root) = tree();
    let run_dir = left_by_a_killed_run(&t, "r1");
    let held = Dir::open_path(&run_dir).unwrap();
    rustix::fs::flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
    assert_eq!(recover(&root, TASK, "now").unwrap(), Vec::new());
    assert!(run_dir.join("token_stats/2026-11-01/evt_r1.json").is_file());
    drop(held);
    let done = recover(&root, TASK, "now").unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].action, RecoveredAction::Restored);
    assert!(
        t.path()
            .join("token_stats/2026-11-01/evt_r1.json")
            .is_file()
    );
    assert!(!run_dir.exists(), "tidied");
}

#[test]
fn a_directory_others_may_write_is_named_never_entered() {
    let (t, root) = tree();
    let run_dir = left_by_a_killed_run(&t, "r2");
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let done = recover(&root, TASK, "now").unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    let RecoveredAction::Failed { error } = &done[0].action else {
        panic!("{done:?}")
    };
    assert!(error.contains("not believed"), "{error}");
    assert!(run_dir.join("token_stats/2026-11-01/evt_r2.json").is_file());
    assert!(!t.path().join("token_stats/2026-11-01/evt_r2.json").exists());
    // Empty, it is nobody's business: nothing said.
    std::fs::remove_dir_all(run_dir.join("token_stats")).unwrap();
    assert_eq!(recover(&root, TASK, "now").unwrap(), Vec::new());
}

#[test]
fn a_file_goes_back_only_where_its_owner_could_have_put_it() {
    let dir = |uid, mode| Meta {
        uid,
        mode,
        ..Dir::open_path(Path::new("/")).unwrap().meta().unwrap()
    };
    let file = |uid| Meta {
        uid,
        ..dir(0, 0o644)
    };
    assert!(could_have_put(&dir(4444, 0o700), &file(4444)));
    assert!(!could_have_put(&dir(4444, 0o500), &file(4444)));
    assert!(!could_have_put(&dir(4242, 0o755), &file(4444)));
    // Even a directory everyone may write: its owner could have made it so.
    assert!(!could_have_put(&dir(4242, 0o777), &file(4444)));
    assert!(could_have_put(&dir(4242, 0o755), &file(0)));
}

/// The steps of a killed run's delete step, as `dispose` takes them.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KilledAfter {
    /// The receipt line fsynced; the file not yet moved.
    ReceiptLine,
    /// The file moved into the run's quarantine directory; not yet unlinked.
    MovedAside,
    /// The file unlinked there; the directory not yet tidied.
    Unlinked,
}

/// What a killed run left: `evt_a.json` of day 2026-11-01 taken as far as `step`,
/// with a receipt whose `delete` line names `receipt_names` (the file as it was when
/// checked), or a receipt torn before its line reached the disk (`None`).
fn killed_run(t: &tempfile::TempDir, root: &Root, step: KilledAfter, torn: bool) {
    let day = t.path().join("token_stats/2026-11-01");
    std::fs::write(day.join("evt_a.json"), "{\"a\":1}").unwrap();
    let dir = root_dir(root).open_dir("token_stats/2026-11-01").unwrap();
    let mut receipt = crate::receipt::Receipt::create(root, TASK, "killed").unwrap();
    if torn {
        let path = t.path().join(".tmpa/receipts/compact_events/killed.jsonl");
        std::fs::write(path, "{\"line\":\"delete\",\"file\":").unwrap();
    } else {
        let line = deletion(&dir, "evt_a.json");
        receipt
            .append(&[crate::receipt::ReceiptLine::Delete(line)])
            .unwrap();
    }
    if step == KilledAfter::ReceiptLine {
        return;
    }
    let mut q = Quarantine::new(TASK, "killed".into());
    let aside = q.aside_for(root, &dir).unwrap();
    dir.move_aside(OsStr::new("evt_a.json"), aside, OsStr::new("evt_a.json"))
        .unwrap();
    if step == KilledAfter::Unlinked {
        aside.unlink("evt_a.json").unwrap();
    }
    // The kill: the run's descriptors (and the lock on its directory) go.
    drop(q);
}

fn in_flight(t: &tempfile::TempDir) -> PathBuf {
    t.path()
        .join(".tmpa/quarantine/in-flight/compact_events/killed")
}

/// Killed after each step of its delete step, a run leaves what the next real run
/// finishes: a file its receipt proves is deleted, one it does not prove goes back,
/// a file not yet moved is not the quarantine's business; the run's directory is
/// tidied whatever the step.
#[test]
fn a_run_killed_at_each_step_of_its_delete_step_is_finished_by_the_next() {
    let event = |t: &tempfile::TempDir| t.path().join("token_stats/2026-11-01/evt_a.json");
    for (step, torn, want) in [
        (KilledAfter::ReceiptLine, false, None),
        (
            KilledAfter::MovedAside,
            false,
            Some(RecoveredAction::Deleted),
        ),
        (
            KilledAfter::MovedAside,
            true,
            Some(RecoveredAction::Restored),
        ),
        (KilledAfter::Unlinked, false, None),
    ] {
        let (t, root) = tree();
        killed_run(&t, &root, step, torn);
        let done = recover(&root, TASK, "now").unwrap();
        let actions: Vec<RecoveredAction> = done.iter().map(|r| r.action.clone()).collect();
        assert_eq!(
            actions,
            want.clone().into_iter().collect::<Vec<_>>(),
            "{step:?}"
        );
        if let Some(r) = done.first() {
            assert_eq!(r.file, path_text(&event(&t)), "{step:?}");
            assert!(!r.needs_look(), "{step:?}");
        }
        let kept = matches!(
            (step, &want),
            (KilledAfter::ReceiptLine, _) | (_, Some(RecoveredAction::Restored))
        );
        assert_eq!(event(&t).is_file(), kept, "{step:?}");
        if kept {
            assert_eq!(std::fs::read(event(&t)).unwrap(), b"{\"a\":1}", "{step:?}");
        }
        assert!(!in_flight(&t).exists(), "{step:?}: tidied");
        // Done once: the next run finds nothing.
        assert_eq!(recover(&root, TASK, "now").unwrap(), Vec::new(), "{step:?}");
    }
}

/// A file moved aside that is not the one its receipt names (rewritten after the
/// check, before the move) goes back; one whose name a newer file took meanwhile is
/// kept aside for an operator (exit 1), the newer file untouched.
#[test]
fn a_file_its_receipt_does_not_prove_goes_back_or_is_kept() {
    let (t, root) = tree();
    let event = t.path().join("token_stats/2026-11-01/evt_a.json");
    killed_run(&t, &root, KilledAfter::MovedAside, false);
    // The file in the quarantine is now another size than the receipt says.
    let aside = in_flight(&t).join("token_stats/2026-11-01/evt_a.json");
    std::fs::write(&aside, "{\"a\":22}").unwrap();
    let done = recover(&root, TASK, "now").unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].action, RecoveredAction::Restored);
    assert_eq!(std::fs::read(&event).unwrap(), b"{\"a\":22}");

    let (t, root) = tree();
    let event = t.path().join("token_stats/2026-11-01/evt_a.json");
    killed_run(&t, &root, KilledAfter::MovedAside, true);
    std::fs::write(&event, "newer").unwrap();
    let done = recover(&root, TASK, "now").unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    let RecoveredAction::Kept { at, why: None } = &done[0].action else {
        panic!("{done:?}")
    };
    assert!(done[0].needs_look());
    assert!(
        at.contains("/.tmpa/quarantine/kept/compact_events/killed/"),
        "{at}"
    );
    assert_eq!(std::fs::read(at).unwrap(), b"{\"a\":1}");
    assert_eq!(std::fs::read(&event).unwrap(), b"newer");
    assert!(!in_flight(&t).exists(), "tidied");
}
