//! What tmpa-core's integration tests share. (The workspace's `tmpa_tests` crate holds the
//! same rule for the program tests; it depends on tmpa-core, so tmpa-core's own tests
//! cannot use it.)
#![allow(dead_code, reason = "each test binary uses a part of it")]

/// The variable that lets a test whose prerequisite is missing skip instead of failing.
pub const ALLOW_SKIP: &str = "TMPA_ALLOW_SKIP";

/// A test's prerequisite (root, `chattr`, a tmpfs): `Some(())` when `found`; when not, a
/// panic naming it, unless [`ALLOW_SKIP`] is set (a developer's machine without root),
/// when it prints `SKIPPED: {what}` and returns `None`, which the caller must act on
/// (`#[must_use]`: `let Some(()) = prerequisite(..) else { return }`). CI
/// (tests/check.sh, as root) runs everything.
///
/// # Panics
/// When `found` is false, unless `TMPA_ALLOW_SKIP` is set.
#[must_use = "a test whose prerequisite is missing must return: `let Some(()) = prerequisite(..) else { return }`"]
pub fn prerequisite(found: bool, what: &str) -> Option<()> {
    if found {
        return Some(());
    }
    if std::env::var_os(ALLOW_SKIP).is_some() {
        eprintln!("SKIPPED: {what}");
        return None;
    }
    panic!(
        "missing prerequisite: {what} (bash tests/check.sh as root provides it; \
         set {ALLOW_SKIP}=1 to skip such tests instead)"
    );
}

/// Runs the test `name` of this test binary alone, in a child process whose environment
/// has `marker` set (the test does nothing without it) and `TMPA_SUMMARY_WATCH=0` (no
/// inotify: every call lists and stats), and fails unless it ran and passed.
pub fn run_polled_child(name: &str, marker: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads=1"])
        .env(marker, "1")
        .env("TMPA_SUMMARY_WATCH", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}
