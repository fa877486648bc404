//! A tree its owner controls cannot steer a program run by root: the tree is chowned to an
//! unprivileged user, who plants a hostile `tmpa.toml`, symlinks, hard links and FIFOs
//! (as that user, through `setpriv`) at the paths the programs open; then the programs
//! run as root. Skipped (with a message) when the test does not run as root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tmpa_tests::{Run, Tree, age, is_root};

/// The tree's owner: an unprivileged user and group no one else uses.
const OWNER: (u32, u32) = (4242, 4343);
const MONTH: Duration = Duration::from_secs(40 * 86_400);

/// Makes `root` and everything under it the owner's, as a backend's tree is.
fn give_to_owner(dir: &Path) {
    tmpa_tests::chown_tree(dir, OWNER.0, OWNER.1);
}

/// Runs `script` with `sh -c` as the tree's owner (no capability, no supplementary
/// group): what that user can do, the test does.
fn as_owner(script: &str) {
    let args = as_owner_args();
    let out = Command::new(&args[0])
        .args(&args[1..])
        .args(["sh", "-c", script])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "as the owner: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree with one old session of `u1`, owned by the unprivileged owner; `None` (test
/// skipped) when not root.
fn owned_tree() -> Option<Tree> {
    if !is_root() {
        tmpa_tests::missing_prerequisite("needs root to chown the tree and to drop to its owner");
        return None;
    }
    let t = Tree::new();
    // The temporary directory is the runner's (0700): the owner must reach its tree.
    fs::set_permissions(t.root(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let s = t.file("chat_history/u1/sessions/s1.json", b"{\"a\":1}");
    age(&s, MONTH);
    give_to_owner(t.root());
    Some(t)
}

fn assert_refused(r: &Run, file: &Path, why: &str) {
    assert_eq!(r.code, 2, "{r:?}");
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(&file.display().to_string()) && first.contains(why),
        "expected {} and {why:?} in: {}",
        file.display(),
        r.stderr
    );
}

/// The owner's `tmpa.toml` pointing root's archival at another directory is refused
/// (exit 2, naming the file and its owner): nothing written there, no session deleted.
#[test]
fn owners_tmpa_toml_cannot_send_root_s_archives_elsewhere() {
    let Some(t) = owned_tree() else { return };
    let victim = tempfile::tempdir().expect("victim dir");
    as_owner(&format!(
        "printf '[archive]\\nurl = \"file://{}\"\\n' > {}/tmpa.toml",
        victim.path().display(),
        t.root().display()
    ));
    let r = t.run("tmpa-archive", &[]);
    assert_refused(
        &r,
        &t.root().join("tmpa.toml"),
        "owned by uid 4242, not by root",
    );
    assert_eq!(fs::read_dir(victim.path()).expect("ls").count(), 0);
    assert!(t.root().join("chat_history/u1/sessions/s1.json").exists());
    // The patrol says why the next archival will refuse, and asks no store.
    let p = t.run("tmpa-patrol", &["--check-archive-store", "--json"]);
    let text = p.stdout.clone();
    assert!(text.contains("owned by uid 4242"), "{p:?}");
    assert!(!text.contains("\"reachable\":true"), "{p:?}");
}

/// A `tmpa.toml` of root's that others may write, or that has a second name, is refused
/// the same way; once it is root's alone the same file is honoured.
#[test]
fn root_s_tmpa_toml_is_believed_only_when_no_one_else_could_write_it() {
    let Some(t) = owned_tree() else { return };
    let store = tempfile::tempdir().expect("store");
    let toml = t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"file://{}\"\n", store.path().display()),
    );
    fs::set_permissions(&toml, fs::Permissions::from_mode(0o664)).expect("chmod");
    assert_refused(&t.run("tmpa-archive", &[]), &toml, "writable by its group");
    fs::set_permissions(&toml, fs::Permissions::from_mode(0o646)).expect("chmod");
    assert_refused(&t.run("tmpa-archive", &[]), &toml, "writable by everyone");
    fs::set_permissions(&toml, fs::Permissions::from_mode(0o644)).expect("chmod");
    let other = t.root().join("other-name");
    fs::hard_link(&toml, &other).expect("link");
    assert_refused(&t.run("tmpa-archive", &[]), &toml, "2 hard links");
    fs::remove_file(&other).expect("unlink");
    let ok = t.run("tmpa-archive", &[]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(store.path().join("u1/s1.json.gz").exists());
}

/// The owner's `tmpa.toml` as a symlink to a file of root's that names a store is never
/// followed: exit 2, saying it is a symlink.
#[test]
fn a_symlinked_tmpa_toml_is_never_followed() {
    let Some(t) = owned_tree() else { return };
    let decoy = tempfile::tempdir().expect("decoy");
    let root_toml = decoy.path().join("root.toml");
    fs::write(&root_toml, "[archive]\nurl = \"file:///nowhere\"\n").expect("write");
    as_owner(&format!(
        "ln -s {} {}/tmpa.toml",
        root_toml.display(),
        t.root().display()
    ));
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("symlink"), "{}", r.stderr);
}

/// Whatever the owner plants at the lock's name — a symlink to a file of root's, a hard
/// link, a FIFO — the run refuses it (exit 2, naming it), never blocks, and never
/// truncates or writes the other file; a lock file of a third user is refused with the
/// `chown` that fixes it. A plain file of the owner's own, in the owner's directory, is
/// the owner's to replace anyway: root uses it (writes its note, never truncates), and
/// gives a lock file it creates there to the owner, so that the owner's runs can use it.
#[test]
fn planted_lock_files_are_refused_and_never_written_through() {
    let Some(t) = owned_tree() else { return };
    let locks = t.root().join(".tmpa/locks");
    let lock = locks.join("archive_history.lock");
    as_owner(&format!("mkdir -p {}", locks.display()));
    let precious = tempfile::tempdir().expect("precious");
    fs::set_permissions(precious.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = precious.path().join("passwd");
    fs::write(&target, "root:x:0:0\n").expect("write");
    let owners = t.root().join("owners-file");
    as_owner(&format!("echo mine > {}", owners.display()));
    let plants = [
        (
            format!("ln -s {} {}", target.display(), lock.display()),
            "a symlink",
        ),
        (
            format!("ln {} {}", owners.display(), lock.display()),
            "2 hard links",
        ),
        (format!("mkfifo {}", lock.display()), "a fifo"),
        // Another service's file (root makes it here: the owner cannot give it away).
        (String::new(), "owned by uid 4343"),
    ];
    for (plant, why) in plants {
        let _ = fs::remove_file(&lock);
        if plant.is_empty() {
            fs::write(&lock, "pid 1 since 2099\n").expect("write");
            std::os::unix::fs::chown(&lock, Some(4343), Some(4343)).expect("chown");
        } else {
            as_owner(&plant);
        }
        let r = t.run("tmpa-archive", &[]);
        assert_refused(&r, &lock, why);
        assert_eq!(fs::read_to_string(&target).expect("read"), "root:x:0:0\n");
        assert_eq!(fs::read_to_string(&owners).expect("read"), "mine\n");
        assert!(t.root().join("chat_history/u1/sessions/s1.json").exists());
    }
    let r = t.run("tmpa-archive", &[]);
    assert!(
        r.stderr.contains("sudo chown 0 "),
        "the remedy: {}",
        r.stderr
    );
    // The lock file root creates is the owner's (as every file root makes in the tree),
    // reused by the next run and never truncated.
    fs::remove_file(&lock).expect("unlink");
    assert_eq!(t.run("tmpa-archive", &["--dry-run"]).code, 0);
    let m = fs::metadata(&lock).expect("lock");
    assert_eq!((m.uid(), m.nlink(), m.len()), (OWNER.0, 1, 64));
    fs::write(&lock, format!("{:<200}\n", "a longer note")).expect("write");
    assert_eq!(t.run("tmpa-archive", &["--dry-run"]).code, 0);
    assert_eq!(
        fs::metadata(&lock).expect("lock").len(),
        201,
        "not truncated"
    );
}

/// A `file://` store in a directory the owner can write: a `{user}` symlink planted there
/// is never followed (the session stays, nothing lands in the symlink's target), and the
/// other users are archived.
#[test]
fn a_symlink_in_a_file_store_is_never_followed() {
    let Some(t) = owned_tree() else { return };
    let s2 = t.file("chat_history/u2/sessions/s2.json", b"{}");
    age(&s2, MONTH);
    give_to_owner(t.root());
    let store = tempfile::tempdir().expect("store");
    fs::set_permissions(store.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    give_to_owner(store.path());
    let victim = tempfile::tempdir().expect("victim");
    as_owner(&format!(
        "ln -s {} {}/u1",
        victim.path().display(),
        store.path().display()
    ));
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"file://{}\"\n", store.path().display()),
    );
    let r = t.run("tmpa-archive", &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("symlink"), "{}", r.stdout);
    assert_eq!(fs::read_dir(victim.path()).expect("ls").count(), 0);
    assert!(t.root().join("chat_history/u1/sessions/s1.json").exists());
    assert!(store.path().join("u2/s2.json.gz").is_file());
    assert!(!s2.exists());
}

/// What a hostile name tries to print: a line of its own that looks like a successful
/// run's last line, then a terminal escape that clears the screen.
const FORGED: &str = "2099-01-01T00:00:00+00:00 tmpa-archive finished: exit=0 (ok)";

fn hostile_name() -> String {
    format!("x\n{FORGED}\x1b[2J")
}

/// No line of the text output is the forged one, and no escape sequence gets through.
fn assert_no_forgery(program: &str, r: &Run) {
    for line in r.stdout.lines().chain(r.stderr.lines()) {
        assert!(
            !line.starts_with("2099-01-01"),
            "{program} printed a forged line:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    assert!(
        !r.stdout.contains('\x1b') && !r.stderr.contains('\x1b'),
        "{program} printed an escape sequence: {r:?}"
    );
}

/// User directories, session, event and temporary file names holding a newline and an
/// escape sequence print escaped in every program's text output (no forged log line, no
/// terminal control), while `--json` keeps the names exact.
#[test]
fn names_with_control_characters_cannot_forge_log_lines() {
    let t = Tree::new();
    let name = hostile_name();
    // tmpa-archive: a user and a session with the name, and a user directory whose
    // sessions/ cannot be listed (a file), so that the user id lands in a problem.
    let s = t.file(format!("chat_history/{name}/sessions/{name}.json"), b"{}");
    age(&s, MONTH);
    t.file(format!("chat_history/{name}2/sessions"), b"not a directory");
    // tmpa-compact: a corrupt event file and a conflicting event with the name as id.
    t.file(format!("token_stats/2026-01-01/evt_{name}.json"), b"{");
    // tmpa-tmpclean: an old temporary with the name.
    let tmp = t.file(
        format!("chat_history/u1/sessions/{name}.json.tmp.1-a"),
        b"partial",
    );
    t.file(format!("chat_history/u1/sessions/{name}.json"), b"{}");
    std::thread::sleep(Duration::from_millis(1300));
    for (program, args) in [
        ("tmpa-archive", &["--dry-run"][..]),
        ("tmpa-archive", &[][..]),
        ("tmpa-compact", &[][..]),
        ("tmpa-tmpclean", &["--older-than", "1m"][..]),
        ("tmpa-patrol", &[][..]),
    ] {
        let r = t.run(program, args);
        assert_no_forgery(program, &r);
    }
    assert!(!tmp.exists(), "tmpclean removed the temporary");
    // JSON keeps the exact names.
    let s2 = t.file(format!("chat_history/{name}/sessions/{name}.json"), b"{}");
    age(&s2, MONTH);
    let r = t.run("tmpa-archive", &["--dry-run", "--json"]);
    let doc = r.json();
    let sessions = doc["sessions"].as_array().expect("sessions");
    assert!(
        sessions
            .iter()
            .any(|s| s["user"] == name.as_str() && s["session"] == name.as_str()),
        "{doc}"
    );
}

/// The arguments of `setpriv` that make what follows run as the tree's owner.
fn as_owner_args() -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={}", OWNER.0),
        format!("--regid={}", OWNER.1),
        "--clear-groups".into(),
        "--".into(),
    ]
}

/// Where no lease can be had (tmpa-tmpclean run as the tree's owner, without `CAP_LEASE`,
/// on a temporary of another user) and the operator accepts `/proc` as proof, `/proc` is
/// read again just before the deletion: a process of the owner's that opens the temporary
/// after the proof (while the receipt's `fdatasync` is slowed by strace) keeps it.
#[test]
fn proc_evidence_is_read_again_just_before_the_deletion() {
    let Some(t) = owned_tree() else { return };
    let bins = tmpa_tests::ReachableBins::copy(&["tmpa-tmpclean"]);
    let tmp = t.file("notifications/u1/inbox/ntf_1.json.tmp", "partial");
    t.file("notifications/u1/inbox/ntf_1.json", "{}");
    give_to_owner(t.root());
    std::os::unix::fs::chown(&tmp, Some(5555), Some(5555)).expect("chown");
    std::thread::sleep(Duration::from_millis(1300));
    let mut child = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=fdatasync:delay_enter=2000000",
        ])
        .args(as_owner_args())
        .args(bins.program_args("tmpa-tmpclean"))
        .arg("--root")
        .arg(t.root())
        .args(["--older-than", "1m", "--proc-shows-all-writers"])
        .env_remove("TMPA_ROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    // The receipt line is written after the proof, before its (slowed) fdatasync.
    tmpa_tests::wait_for_receipt_line(&mut child, t.root(), "tmp_cleanup");
    let args = as_owner_args();
    let mut holder = Command::new(&args[0])
        .args(&args[1..])
        .args(["sleep", "30"])
        .stdin(fs::File::open(&tmp).expect("open"))
        .spawn()
        .expect("holder");
    let r = Run::from(child.wait_with_output().expect("wait")).started();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(tmp.exists(), "deleted while open: {r:?}");
    assert!(r.stdout.contains("/proc read again"), "{r:?}");
}

/// Runs tmpa-archive on `root` in a mount namespace whose `/etc` is a fresh tmpfs holding
/// only `/etc/tmpa/tmpa.toml` = `toml`, with `/etc/tmpa` of mode `mode`.
fn archive_with_etc(root: &Path, toml: &str, mode: &str) -> Run {
    let program = tmpa_tests::bin("tmpa-archive").get_program().to_owned();
    let script = format!(
        "mount -t tmpfs -o mode=0755 none /etc && mkdir -m {mode} /etc/tmpa && \
         printf '%s' \"$TOML\" > /etc/tmpa/tmpa.toml && chmod 0644 /etc/tmpa/tmpa.toml && \
         exec \"$@\""
    );
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(&program)
        .arg("--root")
        .arg(root)
        .env("TOML", toml)
        .env_remove("TMPA_ROOT")
        .output()
        .expect("unshare")
        .into()
}

/// `/etc/tmpa/tmpa.toml` is root's and takes the place of the tree's (here the owner's,
/// which alone would be refused): archives go where it says. An `/etc/tmpa` that others
/// may write is refused (exit 2, naming it).
#[test]
fn etc_tmpa_toml_is_used_instead_of_the_tree_s() {
    let Some(t) = owned_tree() else { return };
    let victim = tempfile::tempdir().expect("victim");
    as_owner(&format!(
        "printf '[archive]\\nurl = \"file://{}\"\\n' > {}/tmpa.toml",
        victim.path().display(),
        t.root().display()
    ));
    let store = tempfile::tempdir().expect("store");
    let toml = format!("[archive]\nurl = \"file://{}\"\n", store.path().display());
    let bad = archive_with_etc(t.root(), &toml, "0775");
    assert_refused(&bad, Path::new("/etc/tmpa"), "writable by its group");
    let r = archive_with_etc(t.root(), &toml, "0755");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(store.path().join("u1/s1.json.gz").is_file(), "{r:?}");
    assert_eq!(fs::read_dir(victim.path()).expect("ls").count(), 0);
}
