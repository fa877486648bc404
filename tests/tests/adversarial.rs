//! Adversarial trees: what less trusted code writing the tree could do to programs that
//! run as root. Afterwards nothing outside the root has changed (a decoy directory is
//! hashed before and after), no program panicked, and every problem named its path.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tmpa_core::Root;
use tmpa_tests::{Tree, event_json, snapshot};

const D1: &str = "2026-11-01";

/// A decoy outside the root holding files named like everything the programs act on.
fn decoy() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for i in 0..20 {
        fs::write(
            d.path().join(format!("evt_decoy{i}.json")),
            event_json(&format!("decoy{i}"), "2026-11-01T00:00:00Z", "u", "m", 1, 1),
        )
        .expect("write");
    }
    fs::write(
        d.path().join("_compacted.json"),
        "{\"format\":1,\"day\":\"2026-11-01\",\"events\":[]}",
    )
    .expect("w");
    fs::write(d.path().join("s.json"), "{}").expect("w");
    fs::write(d.path().join("s.json.tmp"), "{").expect("w");
    d
}

/// Swaps `a` and `b` atomically (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

/// While compactions (real and dry) run, another process keeps swapping the day directory
/// with a symlink to a decoy outside the root. Nothing outside the root changes, and once
/// the swapping stops, every event of the real day is compacted exactly once.
#[test]
fn day_directory_swapped_for_a_symlink_while_compacting() {
    let t = Tree::new();
    let decoy = decoy();
    let before = snapshot(decoy.path(), &[]);
    let n = 1500;
    for i in 0..n {
        t.event(D1, &format!("r{i:05}"), "u", 1, 1);
    }
    let day = t.root().join(format!("token_stats/{D1}"));
    let link = t.root().join("token_stats/.swap");
    std::os::unix::fs::symlink(decoy.path(), &link).expect("symlink");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, swaps, day, link) = (stop.clone(), swaps.clone(), day.clone(), link.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Swap in the symlink, leave it a moment, swap back.
                if exchange(&day, &link) {
                    swaps.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(300));
                    assert!(exchange(&day, &link), "swap back");
                }
                std::thread::sleep(Duration::from_micros(700));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut runs, mut codes) = (0, std::collections::BTreeMap::new());
    while Instant::now() < deadline {
        for args in [&["--day", D1, "--dry-run"][..], &["--day", D1]] {
            let r = t.run("tmpa-compact", args);
            assert!(!r.stderr.contains("panicked"), "{r:?}");
            *codes.entry(r.code).or_insert(0) += 1;
            runs += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    assert!(
        fs::symlink_metadata(&day).expect("day").is_dir(),
        "the real day is back"
    );
    assert_eq!(
        snapshot(decoy.path(), &[]),
        before,
        "the decoy outside the root changed"
    );
    let r = t.run("tmpa-compact", &["--day", D1]);
    assert_eq!(r.code, 0, "{r:?}");
    let read = Root::open(t.root())
        .expect("root")
        .read_day(D1.parse().expect("day"))
        .expect("read");
    assert_eq!(read.events.len(), n, "every real event exactly once");
    assert!(
        read.events.iter().all(|e| e.id().as_str().starts_with('r')),
        "no decoy event leaked in"
    );
    eprintln!(
        "swap race: {} swaps during {runs} runs, exit codes {codes:?}",
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the race helper hardly ran"
    );
}
