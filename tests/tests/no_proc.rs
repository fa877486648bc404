//! No program and no library call needs `/proc` (docs/OPERATIONS.md "Exit codes"): each runs in a private mount
//! namespace where `/proc` is unmounted (a chroot, a minimal sandbox) and does its whole
//! job.

use std::process::Command;
use std::time::Duration;

use tmpa_tests::{Run, Tree};

/// Runs `program args` in a new mount namespace without `/proc`; `None` (after saying so)
/// where such a namespace cannot be made here.
fn without_proc(program: &[std::ffi::OsString], args: &[&std::ffi::OsStr]) -> Option<Run> {
    let probe = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount -l /proc",
        ])
        .status();
    tmpa_tests::prerequisite(
        probe.is_ok_and(|s| s.success()),
        "cannot unmount /proc in a private mount namespace here",
    )?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount -l /proc && ! test -e /proc/self && exec "$@""#)
        .arg("sh")
        .args(program)
        .args(args)
        .env_remove("TMPA_ROOT")
        .output()
        .expect("unshare");
    Some(out.into())
}

fn program_path(name: &str) -> Vec<std::ffi::OsString> {
    tmpa_tests::program_args(name)
}

/// Every library call a backend makes, with a 240-byte event id among them.
#[test]
fn every_library_call_works_without_proc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let Some(r) = without_proc(&program_path("tmpa-libcalls"), &[root.as_os_str()]) else {
        return;
    };
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("ok write_session"), "{}", r.stdout);
}

/// Compaction, archival, tmp cleanup, the patrol and a snapshot with its verification do
/// their whole job without `/proc`.
#[test]
fn every_program_works_without_proc() {
    let t = Tree::new();
    for i in 0..5 {
        t.event("2026-11-01", &format!("e{i}"), "u1", 1, 1);
    }
    t.event("2026-11-01", &"l".repeat(240), "u1", 1, 1);
    t.file("chat_history/u1/sessions/s1.json", b"{}");
    tmpa_tests::age(
        &t.root().join("chat_history/u1/sessions/s1.json"),
        Duration::from_secs(40 * 86_400),
    );
    t.file("notifications/u1/inbox/ntf_1.json", b"{}");
    t.file("notifications/u1/inbox/ntf_1.json.tmp.4242.9f3a", b"{");
    std::thread::sleep(Duration::from_millis(1300));
    let root = t.root().as_os_str();
    for (program, args, code) in [
        ("tmpa-compact", vec!["--before", "2026-11-02"], 0),
        ("tmpa-archive", vec![], 0),
        ("tmpa-tmpclean", vec!["--older-than", "1m"], 0),
    ] {
        let mut a: Vec<&std::ffi::OsStr> = vec!["--root".as_ref(), root];
        a.extend(args.iter().map(|s| std::ffi::OsStr::new(*s)));
        let Some(r) = without_proc(&program_path(program), &a) else {
            return;
        };
        assert_eq!(r.code, code, "{program}: {r:?}");
    }
    let day = t.root().join("token_stats/2026-11-01");
    assert!(day.join("_compacted.json").exists());
    assert_eq!(
        std::fs::read_dir(&day)
            .expect("ls")
            .filter(|e| e
                .as_ref()
                .expect("e")
                .file_name()
                .to_string_lossy()
                .starts_with("evt_"))
            .count(),
        0,
        "every loose event, the 240-byte one too, compacted and deleted"
    );
    assert!(t.root().join("chat_history/u1/archive/s1.json.gz").exists());
    assert!(!t.root().join("chat_history/u1/sessions/s1.json").exists());
    assert!(
        !t.root()
            .join("notifications/u1/inbox/ntf_1.json.tmp.4242.9f3a")
            .exists()
    );
    let Some(r) = without_proc(
        &program_path("tmpa-patrol"),
        &["--root".as_ref(), root, "--json".as_ref()],
    ) else {
        return;
    };
    let doc = r.json();
    for c in doc["checks"].as_array().expect("checks") {
        // `service` is unknown without --service-cmd; every other check must run.
        if c["name"] != "service" {
            assert_ne!(c["status"], "unknown", "{c:#}");
        }
    }
    let out = tempfile::tempdir().expect("tempdir");
    let snap = out.path().join("snap");
    let snapshot = program_path("tmpa-snapshot");
    let Some(r) = without_proc(
        &snapshot,
        &["--root".as_ref(), root, "--to".as_ref(), snap.as_os_str()],
    ) else {
        return;
    };
    assert_eq!(r.code, 0, "tmpa-snapshot: {r:?}");
    let Some(r) = without_proc(&snapshot, &["--verify".as_ref(), snap.as_os_str()]) else {
        return;
    };
    assert_eq!(r.code, 0, "tmpa-snapshot --verify: {r:?}");
    assert!(snap.join("chat_history/u1/archive/s1.json.gz").is_file());
}
