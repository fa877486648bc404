//! tmpa-tmpclean where the kernel gives no file leases (NFS, FUSE, some overlays; here:
//! `fs.leases-enable = 0`, which makes `F_SETLEASE` answer `EINVAL` as those do). `/proc`
//! is then the only evidence: what it shows open is kept; what it does not is kept as
//! unproven unless the operator passes `--proc-shows-all-writers`.
//!
//! One test in its own binary: it turns leases off for the whole machine for a moment,
//! and no other test may run meanwhile (cargo runs test binaries one after another).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tmpa_tests::{Run, Tree, bin};

const SYSCTL: &str = "/proc/sys/fs/leases-enable";

/// Leases off until dropped.
struct LeasesOff(String);

impl LeasesOff {
    fn set() -> Option<LeasesOff> {
        let before = fs::read_to_string(SYSCTL).ok()?;
        fs::write(SYSCTL, "0").ok()?;
        Some(LeasesOff(before))
    }
}

impl Drop for LeasesOff {
    fn drop(&mut self) {
        let _ = fs::write(SYSCTL, self.0.trim());
    }
}

fn temp(t: &Tree, rel: &str) -> PathBuf {
    let p = t.file(rel, "partial");
    let fin = tmpa_core::temp_final_name(p.file_name().expect("name")).expect("a temporary");
    t.file(Path::new(rel).with_file_name(fin), "{}");
    p
}

fn line_for<'a>(r: &'a Run, p: &Path) -> &'a str {
    let p = p.to_str().expect("utf-8");
    r.stdout
        .lines()
        .find(|l| l.contains(p))
        .unwrap_or_else(|| panic!("{p} not reported:\n{}", r.stdout))
}

/// Without leases: unproven (exit 1) by default; with `--proc-shows-all-writers`, a file
/// `/proc` shows open is kept and a free one deleted, each decision naming `/proc`.
#[test]
fn without_leases_proc_is_evidence_and_proof_only_when_the_operator_says_so() {
    let Some(_off) = tmpa_tests::prerequisite(
        LeasesOff::set(),
        &format!("cannot turn leases off here ({SYSCTL} not writable)"),
    ) else {
        return;
    };
    let t = Tree::new();
    let free = temp(&t, "notifications/u1/inbox/ntf_1.json.tmp");
    let held = temp(&t, "notifications/u1/inbox/ntf_2.json.tmp.77.x");
    std::thread::sleep(Duration::from_millis(1300));

    let r = t.run("tmpa-tmpclean", &["--older-than", "1m"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(free.exists() && held.exists());
    let line = line_for(&r, &free);
    assert!(line.contains("keep         unproven"), "{}", r.stdout);
    assert!(line.contains("no file lease here"), "{}", r.stdout);
    assert!(line.contains("--proc-shows-all-writers"), "{}", r.stdout);

    let mut holder = Command::new("sleep")
        .arg("30")
        .stdin(fs::File::open(&held).expect("open"))
        .spawn()
        .expect("sleep");
    let r: Run = bin("tmpa-tmpclean")
        .arg("--root")
        .arg(t.root())
        .args(["--older-than", "1m", "--proc-shows-all-writers"])
        .output()
        .expect("run")
        .into();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(held.exists(), "/proc shows it open:\n{}", r.stdout);
    assert!(
        line_for(&r, &held).contains("keep         open"),
        "{}",
        r.stdout
    );
    assert!(!free.exists(), "{}", r.stdout);
    assert!(
        line_for(&r, &free).contains("not open (/proc)"),
        "{}",
        r.stdout
    );
}
