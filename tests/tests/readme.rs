//! README.md "Set-up": its demo commands, run as written (only `demo-run` moved into a
//! temporary directory), do what the README says: command 1 compacts a clean demo tree
//! and exits 0; the corrupt-file example after it keeps and names the file and exits 1.

use std::path::Path;
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
