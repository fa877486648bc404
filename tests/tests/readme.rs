//! README.md "Set-up": its demo commands, run as written (only `demo-run` moved into a
//! temporary directory), do what the README says: command 1 compacts a clean demo tree
//! and exits 0; the corrupt-file example after it keeps and names the file and exits 1.
//! Command 2, the tests, passes wherever the checkout is: the tests that run a program as
//! another user pass from below a directory only root may enter.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

/// The README's command line that follows the comment starting with `comment`.
fn readme_command(comment: &str) -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let mut lines = readme.lines();
    lines
        .find(|l| l.starts_with(comment))
        .unwrap_or_else(|| panic!("README.md has no line starting {comment:?}"));
    lines
        .next()
        .expect("a command after the comment")
        .to_owned()
}

/// Runs `command` with sh in the workspace, its `demo-run` being `dir`, with the cargo
/// that runs this test first on PATH.
fn sh(command: &str, dir: &Path) -> Output {
    assert!(command.contains(" demo-run"), "{command}");
    let command = command.replace(" demo-run", &format!(" {}", dir.display()));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_dir = Path::new(&cargo).parent().unwrap_or(Path::new(""));
    let path = std::env::var("PATH").unwrap_or_default();
    Command::new("sh")
        .args(["-c", &command])
        .current_dir(workspace())
        .env("PATH", format!("{}:{path}", cargo_dir.display()))
        .env_remove("TMPA_ROOT")
        .output()
        .expect("sh")
}

/// Command 1 builds a clean demo tree and compacts it: every past day merged, its loose
/// files deleted, exit 0; the corrupt-file example adds one corrupt event file: it is
/// named on a `problem:` line and kept, and the run exits 1. Command 2 is the tests.
#[test]
fn readme_demo_commands_do_what_the_readme_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = dir.path().join("demo-run");

    let out = sh(&readme_command("# 1. "), &demo);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert!(text.contains(" compacted: loose="), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains(" corrupt=0 ") && last.ends_with("exit=0 (ok)"),
        "{text}"
    );
    assert!(!last.contains(" merged=0 "), "nothing was merged: {text}");

    assert_eq!(readme_command("# 2. "), "bash tests/check.sh");
    let out = sh(&readme_command("# With one corrupt event file"), &demo);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}\n{err}");
    let problem = text
        .lines()
        .find(|l| l.trim_start().starts_with("problem:"))
        .unwrap_or_else(|| panic!("no problem: line\n{text}"));
    let broken = problem
        .split_whitespace()
        .nth(1)
        .expect("the file")
        .trim_end_matches(':');
    assert!(broken.ends_with("/evt_broken.json"), "{problem}");
    assert!(Path::new(broken).is_file(), "{broken} was not kept");
    assert!(
        text.lines()
            .last()
            .unwrap_or_default()
            .ends_with("exit=1 (needs a look)"),
        "{text}"
    );
}

/// The tests that run one of the workspace's programs as another user (test file, test):
/// every test file that uses `tmpa_tests::ReachableBins` is here.
const AS_ANOTHER_USER: [(&str, &str); 4] = [
    (
        "cron",
        "one_line_of_the_configuration_makes_compaction_real_as_the_tree_owner",
    ),
    ("faults", "permission_denied_for_the_backend_user"),
    (
        "hostile",
        "proc_evidence_is_read_again_just_before_the_deletion",
    ),
    ("patrol", "a_journal_the_patrol_may_not_read_is_a_warning"),
];

/// The programs those tests run.
const PROGRAMS: [&str; 4] = [
    "tmpa-compact",
    "tmpa-archive",
    "tmpa-tmpclean",
    "tmpa-patrol",
];

/// Command 2 passes from a checkout below a 0700 directory (root's home, a `mktemp -d`):
/// the tests that run a program as another user ([`AS_ANOTHER_USER`]) pass when their
/// executables, and the programs beside them, lie below a directory only root may enter.
///
/// How: a test finds the programs it runs from nothing but its own executable's place
/// (`tmpa_tests::target_dir` is the `target/debug` above `current_exe()`); what else it
/// reads of the workspace it reads as root, through `CARGO_MANIFEST_DIR`. So rather than
/// clone and build again (minutes), this puts the test executables cargo has already
/// built (`cargo test --workspace --no-run`, which builds nothing when `cargo test` has
/// run) and the programs into `target/debug` of a fresh 0700 directory, as hard links,
/// and runs each test there (`--exact`, in parallel; about 10 s, hostile.rs's slowed
/// fdatasync the longest), from tests/ as cargo does.
///
/// How it fails: a test that runs a program from `target/` as another user cannot start
/// it there, as from a private clone (runuser, and env or sh as the user, get `Permission
/// denied`), and fails, saying so; its output is in the failure. (setpriv alone would still
/// start it, holding root's capabilities while it executes its command: that is why
/// `ReachableBins::program_args` starts each program through env.) A name here that no
/// longer names a test fails too (each must run and pass), and so does a test file that
/// uses `ReachableBins` without a test here.
#[test]
fn tests_that_run_programs_as_another_user_pass_from_a_private_directory() {
    let Some(()) = tmpa_tests::prerequisite(
        tmpa_tests::is_root(),
        "needs root to run programs as another user",
    ) else {
        return;
    };
    assert_the_list_is_whole();
    let private = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
    let debug = private.path().join("target/debug");
    fs::create_dir_all(debug.join("deps")).expect("mkdir");
    for p in PROGRAMS {
        let built = PathBuf::from(tmpa_tests::bin(p).get_program());
        link(&built, &debug.join(p));
    }
    let runs: Vec<(&str, PathBuf)> = AS_ANOTHER_USER
        .iter()
        .zip(test_executables())
        .map(|(&(_, test), exe)| {
            let there = debug.join("deps").join(exe.file_name().expect("name"));
            link(&exe, &there);
            (test, there)
        })
        .collect();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let running: Vec<_> = runs
            .iter()
            .map(|(test, exe)| {
                s.spawn(move || {
                    Command::new(exe)
                        .args([test, "--exact"])
                        .current_dir(workspace().join("tests"))
                        .env_remove(tmpa_tests::ALLOW_SKIP)
                        .env_remove("TMPA_ROOT")
                        .output()
                        .expect("run the test executable")
                })
            })
            .collect();
        running
            .into_iter()
            .map(|r| r.join().expect("thread"))
            .collect()
    });
    let failed: Vec<String> = runs
        .iter()
        .zip(outputs)
        .filter_map(|((test, exe), out)| {
            let text = String::from_utf8_lossy(&out.stdout);
            let passed = out.status.success() && text.contains("test result: ok. 1 passed;");
            (!passed).then(|| {
                format!(
                    "{test}, run from {} (below a 0700 directory): {}\n{text}\n{}",
                    exe.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Every test file that uses `ReachableBins` has its tests in [`AS_ANOTHER_USER`], and
/// each name there is a test of its file.
fn assert_the_list_is_whole() {
    let dir = workspace().join("tests/tests");
    let mut using = BTreeSet::new();
    for e in fs::read_dir(&dir).expect("tests/tests") {
        let path = e.expect("entry").path();
        let stem = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let is_rs = path.extension().is_some_and(|x| x == "rs");
        if is_rs && stem != "readme" {
            let source = fs::read_to_string(&path).expect("read");
            if source.contains("ReachableBins") {
                using.insert(stem);
            }
        }
    }
    let listed: BTreeSet<String> = AS_ANOTHER_USER
        .iter()
        .map(|(f, _)| (*f).to_owned())
        .collect();
    assert_eq!(
        using, listed,
        "the test files that use ReachableBins, and those AS_ANOTHER_USER names"
    );
    for (file, test) in AS_ANOTHER_USER {
        let source = fs::read_to_string(dir.join(format!("{file}.rs"))).expect("read");
        assert!(
            source.contains(&format!("#[test]\nfn {test}()")),
            "tests/tests/{file}.rs has no test {test}"
        );
    }
}

/// The executables of [`AS_ANOTHER_USER`]'s test files, in its order, as cargo reports
/// them (building them when they are not built).
fn test_executables() -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // --workspace: the features `cargo test --workspace` builds with, so that this finds
    // its executables rather than building others.
    cmd.args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(workspace());
    for (file, _) in AS_ANOTHER_USER {
        cmd.args(["--test", file]);
    }
    let out = cmd.output().expect("cargo test --no-run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let msg: serde_json::Value = serde_json::from_str(line).expect("cargo's JSON");
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        let is_test = msg["target"]["kind"] == serde_json::json!(["test"]);
        if is_test {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    AS_ANOTHER_USER
        .iter()
        .map(|(file, _)| {
            let mut of_file = found.iter().filter(|(n, _)| n == file);
            let exe = of_file
                .next()
                .unwrap_or_else(|| panic!("cargo reported no test executable {file}: {found:?}"));
            assert!(
                of_file.next().is_none(),
                "two executables {file}: {found:?}"
            );
            exe.1.clone()
        })
        .collect()
}

/// `to` as a hard link to `from` (a copy across file systems).
fn link(from: &Path, to: &Path) {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    }
}
