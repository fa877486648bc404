//! A tree its owner controls cannot steer a program run by root: the tree is chowned to an
//! unprivileged user, who plants a hostile `tmpa.toml`, symlinks, hard links and FIFOs
//! (as that user, through `setpriv`) at the paths the programs open; then the programs
//! run as root. Skipped (with a message) when the test does not run as root.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tmpa_tests::{Run, Tree, age, bin, is_root};

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
    tmpa_tests::prerequisite(
        is_root(),
        "needs root to chown the tree and to drop to its owner",
    )?;
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

/// A `tmpa.toml` of root's that others may write is refused the same way. A second name
/// of it (a hard-link backup's) stops nothing where only someone who may write it could
/// have made that name (`fs.protected_hardlinks` = 1, as here); where any user may link
/// any file (`protected_hardlinks` = 0, read so in a mount namespace), the owner could
/// have linked there a file of root's never meant for this tree, and it is refused, saying
/// so. Root's alone, the same file is honoured.
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
    assert_refused(
        &unprotected_hardlinks(t.root(), "tmpa-archive", &["--dry-run"]),
        &toml,
        "has 2 hard links, and others may write its directory while fs.protected_hardlinks is 0",
    );
    assert!(protected_hardlinks(), "this machine protects hard links");
    let ok = t.run("tmpa-archive", &[]);
    assert_eq!(
        ok.code, 0,
        "a second name, where the kernel protects hard links: {ok:?}"
    );
    assert!(store.path().join("u1/s1.json.gz").exists());
}

/// Whether this machine's kernel lets a user link only files it may write.
fn protected_hardlinks() -> bool {
    fs::read_to_string("/proc/sys/fs/protected_hardlinks").is_ok_and(|v| v.trim() == "1")
}

/// Runs `program --root {root} args` as root in a mount namespace where
/// `/proc/sys/fs/protected_hardlinks` reads 0, as on a kernel left at its own default,
/// where any user may link any file it can reach (the setting itself is not touched).
fn unprotected_hardlinks(root: &Path, program: &str, args: &[&str]) -> Run {
    let scratch = tempfile::tempdir().expect("scratch");
    let zero = scratch.path().join("zero");
    fs::write(&zero, "0\n").expect("write");
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$ZERO\" /proc/sys/fs/protected_hardlinks && exec \"$@\"")
        .arg("sh")
        .args(tmpa_tests::program_args(program))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("ZERO", &zero)
        .env_remove("TMPA_ROOT")
        .output()
        .expect("unshare")
        .into()
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

/// Whatever the owner plants at the lock's name, the run never blocks and never writes
/// through it, nor truncates it: a symlink (to a file of root's) and a FIFO are refused
/// (exit 2, naming them); a second name of the owner's own file, or a file of a third
/// user's with one name, is only locked (read-only), never written. A link to a file of
/// root's, which the owner could make only where `fs.protected_hardlinks` is 0, is refused
/// there. Root's lock files are root's, and the owner's runs use them as they are (no
/// chown): a lock file is opened read-only, by anyone.
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
    let refused = [
        (
            format!("ln -s {} {}", target.display(), lock.display()),
            "a symlink",
        ),
        (format!("mkfifo {}", lock.display()), "a fifo"),
    ];
    for (plant, why) in refused {
        let _ = fs::remove_file(&lock);
        as_owner(&plant);
        let r = t.run("tmpa-archive", &[]);
        assert_refused(&r, &lock, why);
        assert!(t.root().join("chat_history/u1/sessions/s1.json").exists());
    }
    // Locked, never written: the owner's own file with a second name, another user's.
    let _ = fs::remove_file(&lock);
    as_owner(&format!("ln {} {}", owners.display(), lock.display()));
    let r = t.run("tmpa-archive", &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let _ = fs::remove_file(&lock);
    fs::write(&lock, "pid 1 since 2099\n").expect("write");
    std::os::unix::fs::chown(&lock, Some(4343), Some(4343)).expect("chown");
    let r = t.run("tmpa-archive", &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        fs::read_to_string(&lock).expect("read"),
        "pid 1 since 2099\n"
    );
    // A file of root's linked at the lock's name (root makes the link: the owner could
    // only where hard links are not protected).
    let _ = fs::remove_file(&lock);
    fs::hard_link(&target, &lock).expect("link");
    let r = unprotected_hardlinks(t.root(), "tmpa-archive", &[]);
    assert_refused(&r, &lock, "has 2 hard links");
    assert_eq!(t.run("tmpa-archive", &["--dry-run"]).code, 0);
    assert_eq!(fs::read_to_string(&target).expect("read"), "root:x:0:0\n");
    assert_eq!(fs::read_to_string(&owners).expect("read"), "mine\n");
    // The lock file root creates is root's, never written; the owner's runs lock it too.
    fs::remove_file(&lock).expect("unlink");
    assert_eq!(t.run("tmpa-archive", &["--dry-run"]).code, 0);
    let m = fs::metadata(&lock).expect("lock");
    assert_eq!((m.uid(), m.nlink(), m.len()), (0, 1, 0));
    let owner = tmpa_tests::ReachableBins::copy(&["tmpa-archive"]);
    let out = Command::new(&as_owner_args()[0])
        .args(&as_owner_args()[1..])
        .args(owner.program_args("tmpa-archive"))
        .arg("--root")
        .arg(t.root())
        .arg("--dry-run")
        .env_remove("TMPA_ROOT")
        .output()
        .expect("setpriv");
    let r = Run::from(out).started();
    assert_eq!(r.code, 0, "the owner's run on root's lock file: {r:?}");
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

/// Another user of the tree, a second service: owns a user directory of its own (0700).
const OTHER: (u32, u32) = (4444, 4545);

/// [`owned_tree`], plus `chat_history/{user}` of [`OTHER`] (0700, as that service keeps
/// it) for each of `users`, each with an old session of its own, `s_{user}.json`.
fn tree_of_two_owners(users: &[&str]) -> Option<Tree> {
    let t = owned_tree()?;
    for user in users {
        let s = t.file(
            format!("chat_history/{user}/sessions/s_{user}.json"),
            format!("{{\"of\":\"{user}\"}}"),
        );
        age(&s, MONTH);
        let dir = t.root().join("chat_history").join(user);
        tmpa_tests::chown_tree(&dir, OTHER.0, OTHER.1);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    Some(t)
}

/// Runs `program --root {root} args` as root and as pid 1 of a pid namespace (as a
/// container runs it, which made the old `{time}-{pid}` run ids predictable), with the
/// kernel's measure of its peak memory: `(exit code, peak RSS in bytes)`; exit code -9
/// when it had not finished after 120 s (then killed).
fn as_pid_1_with_peak_rss(root: &Path, program: &str, args: &[&str]) -> (i32, u64, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import resource, subprocess, sys\n\
             try:\n\
             \x20   r = subprocess.run(sys.argv[1:], capture_output=True, timeout=120)\n\
             \x20   code, text = r.returncode, (r.stdout + r.stderr).decode(errors='replace')\n\
             except subprocess.TimeoutExpired as e:\n\
             \x20   code, text = -9, 'timed out'\n\
             print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
             print(text)",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
        ])
        .args(tmpa_tests::program_args(program))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("TMPA_ROOT")
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut it = first
        .split_whitespace()
        .map(|w| w.parse::<i64>().unwrap_or(-1));
    let code = it.next().unwrap_or(-1) as i32;
    let kib = it.next().unwrap_or(0).max(0) as u64;
    (code, kib << 10, rest.to_owned())
}

/// A tree whose root is the owner's (uid 4242) and two of whose users' directories are
/// another service's (uid 4444, 0700), run as root. The owner plants, at every path of the
/// programs' state: FIFOs at every receipt name a run as pid 1 would have used in the next
/// two minutes (the old `{time}-{pid}` ids), a link to a file of root's at others, FIFOs
/// for the holder notes, a run record and spill files of 300 MB, and a forged quarantine
/// entry (with a 300 MB receipt without a newline) that would put the owner's file into
/// the other user's directory. Root's own killed archival left two of the other user's
/// sessions in its quarantine, with a receipt of 300 MB without a newline; the owner
/// replaced the directory of one of them with its own.
///
/// Every root run finishes (none blocks), peaks under 64 MiB (a 300 MB line held whole
/// took 304 MiB), writes nothing through a planted name, puts nothing of the owner's
/// into the other user's directory, puts back the session whose directory is still its
/// owner's, and keeps the other in `quarantine/kept/` rather than hand it to the owner.
#[test]
fn planted_state_cannot_block_grow_or_misdirect_a_root_run() {
    let Some(t) = tree_of_two_owners(&["u2", "u3"]) else {
        return;
    };
    let root = t.root();
    let state = root.join(".tmpa");
    let precious = tempfile::tempdir().expect("precious");
    let target = precious.path().join("root-file");
    fs::write(&target, "root's\n").expect("write");
    // The owner's plants.
    let forged = "20260101T000000+0000-1";
    as_owner(&format!(
        "set -e; mkdir -p {state}; cd {state}; mkdir -p locks runs spill \
           quarantine/in-flight/archive_history/{forged}/chat_history/u2/sessions; \
         for task in compact_events archive_history tmp_cleanup; do \
           mkdir -p receipts/$task; mkfifo locks/$task.holder; \
           i=-5; while [ $i -lt 120 ]; do \
             [ $task = tmp_cleanup ] || mkfifo receipts/$task/$(date -d \"$i sec\" +%Y%m%dT%H%M%S%z)-1.jsonl; \
             i=$((i+1)); done; \
         done; \
         truncate -s 300M runs/compact_events.json; mkfifo runs/archive_history.json; \
         mkfifo spill/compact_events.1.0.spill; truncate -s 300M spill/compact_events.1.1.spill; \
         echo '{{\"planted\":1}}' > quarantine/in-flight/archive_history/{forged}/chat_history/u2/sessions/planted.json; \
         truncate -s 300M receipts/archive_history/{forged}.jsonl",
        state = state.display()
    ));
    // A link to root's file at each receipt name of tmp_cleanup (root makes them: the
    // owner could where hard links are not protected).
    for i in -5..120 {
        let name = chrono::Local::now() + chrono::Duration::seconds(i);
        let name = format!("{}-1.jsonl", name.format("%Y%m%dT%H%M%S%z"));
        let _ = fs::hard_link(&target, state.join("receipts/tmp_cleanup").join(name));
    }
    // Root's killed archival: the other user's s_u2 and s_u3 in its quarantine, the
    // receipt 300 MB of zeros; the owner has replaced u3's directory with its own.
    let killed = "20260101T000000+0000-00000000000000aa";
    let run_dir = state
        .join("quarantine/in-flight/archive_history")
        .join(killed);
    for user in ["u2", "u3"] {
        let aside = run_dir.join(format!("chat_history/{user}/sessions"));
        fs::create_dir_all(&aside).expect("mkdir");
        let s = root.join(format!("chat_history/{user}/sessions/s_{user}.json"));
        fs::rename(&s, aside.join(format!("s_{user}.json"))).expect("move aside");
    }
    fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let huge = fs::File::create(state.join(format!("receipts/archive_history/{killed}.jsonl")))
        .expect("receipt");
    huge.set_len(300 << 20).expect("truncate");
    as_owner(&format!(
        "cd {}/chat_history && mv u3 u3b && mkdir -p u3/sessions",
        root.display()
    ));
    for (program, args) in [
        ("tmpa-compact", &[][..]),
        ("tmpa-archive", &[][..]),
        ("tmpa-tmpclean", &["--older-than", "1m"][..]),
    ] {
        let (code, rss, text) = as_pid_1_with_peak_rss(root, program, args);
        assert!(code == 0 || code == 1, "{program}: exit {code}: {text}");
        assert!(
            rss < 64 << 20,
            "{program} peaked at {} MiB: {text}",
            rss >> 20
        );
        if program == "tmpa-archive" {
            assert_eq!(code, 1, "{text}");
            assert!(
                text.contains("not believed"),
                "the forged entry named: {text}"
            );
            assert!(text.contains("could not have written"), "{text}");
        }
    }
    assert_eq!(fs::read_to_string(&target).expect("read"), "root's\n");
    assert_eq!(fs::metadata(&target).expect("stat").nlink(), 126);
    assert!(!root.join("chat_history/u2/sessions/planted.json").exists());
    assert!(
        state
            .join(format!(
                "quarantine/in-flight/archive_history/{forged}/chat_history/u2/sessions/planted.json"
            ))
            .is_file(),
        "the forged entry is left alone"
    );
    // u2's session went back to its owner's directory, then to its archive.
    assert!(root.join("chat_history/u2/archive/s_u2.json.gz").is_file());
    let u2 = fs::metadata(root.join("chat_history/u2/archive/s_u2.json.gz")).expect("stat");
    assert_eq!(u2.uid(), OTHER.0);
    // u3's was kept, never moved into the owner's directory.
    assert_eq!(
        fs::read_dir(root.join("chat_history/u3/sessions"))
            .expect("ls")
            .count(),
        0
    );
    let kept = state.join(format!(
        "quarantine/kept/archive_history/{killed}/chat_history/u3/sessions/s_u3.json"
    ));
    let m = fs::metadata(&kept).expect("kept in the quarantine");
    assert_eq!(m.uid(), OTHER.0);
    // Root's receipts are new files of root's, one name each; every plant is as it was.
    for task in ["compact_events", "archive_history", "tmp_cleanup"] {
        for e in fs::read_dir(state.join("receipts").join(task)).expect("ls") {
            let m = fs::symlink_metadata(e.expect("entry").path()).expect("lstat");
            if m.uid() == 0 && m.file_type().is_file() && m.nlink() == 1 {
                continue;
            }
            assert!(
                m.file_type().is_fifo() || m.nlink() == 126 || m.len() == 300 << 20,
                "{task}: {m:?}"
            );
        }
    }
    assert!(
        fs::symlink_metadata(state.join("spill/compact_events.1.0.spill"))
            .expect("the owner's fifo")
            .file_type()
            .is_fifo()
    );
}

/// While a root archival deletes another user's session (its unlink, the run's first,
/// stretched to 1.5 s by strace), the file waits in root's own quarantine directory (0700): the tree's owner
/// can neither list it nor rename the file away (before, the quarantine's directories
/// were the owner's, who could move the file anywhere and delete it).
#[test]
fn the_tree_s_owner_cannot_take_a_user_s_file_out_of_root_s_quarantine() {
    let Some(t) = tree_of_two_owners(&["u2"]) else {
        return;
    };
    let root = t.root().to_path_buf();
    // u2's session the only one to go: the run's first unlinkat is its delete step's.
    fs::remove_file(root.join("chat_history/u1/sessions/s1.json")).expect("rm");
    let child = tmpa_tests::strace_inject("unlinkat:delay_enter=1500000:when=1", "tmpa-archive")
        .arg("--root")
        .arg(&root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace");
    let area = root.join(".tmpa/quarantine/in-flight/archive_history");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let aside = loop {
        let found = fs::read_dir(&area).ok().and_then(|runs| {
            runs.flatten()
                .map(|r| r.path().join("chat_history/u2/sessions/s_u2.json"))
                .find(|p| p.exists())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "never moved aside");
        std::thread::sleep(Duration::from_millis(5));
    };
    let run_dir = aside.ancestors().nth(4).expect("the run's directory");
    let stolen = root.join("stolen.json");
    let args = as_owner_args();
    let tried = Command::new(&args[0])
        .args(&args[1..])
        .args([
            "sh",
            "-c",
            "mv \"$1\" \"$2\" || exit 3; ls \"$4\" && exit 4; exit 0",
            "sh",
        ])
        .arg(&aside)
        .arg(&stolen)
        .arg("unused")
        .arg(run_dir)
        .output()
        .expect("setpriv");
    let r = Run::from(child.wait_with_output().expect("wait")).started();
    assert_eq!(
        tried.status.code(),
        Some(3),
        "the owner moved it: {}",
        String::from_utf8_lossy(&tried.stderr)
    );
    assert!(!stolen.exists());
    assert_eq!(r.code, 0, "{r:?}");
    assert!(root.join("chat_history/u2/archive/s_u2.json.gz").is_file());
    let m = fs::metadata(run_dir).map(|m| m.permissions().mode() & 0o777);
    assert!(m.is_err(), "the run's directory is tidied away: {m:?}");
}

/// Two root compactions with the lock unlinked between them: the tree's owner removes the
/// lock file while a paced root compaction works on its first day, and a second root
/// compaction takes a new lock and compacts the third day. The first finds its lock no
/// longer named before its next batch of deletions and stops there (exit 4, saying why)
/// instead of deleting beside the second; no event is lost, and the next run finishes.
#[test]
fn a_lock_unlinked_mid_run_stops_that_run_s_deletions() {
    let Some(t) = owned_tree() else { return };
    let days = ["2026-01-01", "2026-01-02", "2026-01-03"];
    for day in days {
        for i in 0..300 {
            t.event(day, &format!("e{i}"), "u1", i, 1);
        }
    }
    give_to_owner(t.root());
    let first = bin("tmpa-compact")
        .arg("--root")
        .arg(t.root())
        .args(["--pace", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tmpa-compact");
    let receipts = t.root().join(".tmpa/receipts/compact_events");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while fs::read_dir(&receipts).map_or(0, |d| d.count()) == 0 {
        assert!(std::time::Instant::now() < deadline, "never deleted");
        std::thread::sleep(Duration::from_millis(10));
    }
    as_owner(&format!(
        "rm {}/.tmpa/locks/compact_events.lock",
        t.root().display()
    ));
    let second = t.run("tmpa-compact", &["--day", days[2]]);
    assert_eq!(second.code, 0, "{second:?}");
    let first = Run::from(first.wait_with_output().expect("wait"));
    assert_eq!(first.code, 4, "{first:?}");
    assert!(
        format!("{}{}", first.stdout, first.stderr).contains("no longer names the lock"),
        "{first:?}"
    );
    assert_eq!(tmpa_tests::events_in_days(t.root(), &days), 900);
    assert_eq!(t.run("tmpa-compact", &[]).code, 0);
    assert_eq!(tmpa_tests::events_in_days(t.root(), &days), 900);
    // Each file deleted once: by one run's `delete` line that no `kept` line of the same
    // run takes back.
    let mut deleted: Vec<String> = Vec::new();
    for e in fs::read_dir(&receipts).expect("ls").flatten() {
        let text = fs::read_to_string(e.path()).expect("receipt");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a receipt line"))
            .collect();
        let file = |l: &serde_json::Value, kind: &str| {
            (l["line"] == kind).then(|| l["file"].as_str().unwrap_or_default().to_owned())
        };
        let kept: std::collections::BTreeSet<String> =
            lines.iter().filter_map(|l| file(l, "kept")).collect();
        // Nor did the second run's recovery take the first's files in flight for a
        // killed run's (the first holds its quarantine directory's lock).
        assert!(kept.is_empty(), "{}: kept {kept:?}", e.path().display());
        deleted.extend(
            lines
                .iter()
                .filter_map(|l| file(l, "delete"))
                .filter(|f| !kept.contains(f)),
        );
    }
    let unique: std::collections::BTreeSet<&String> = deleted.iter().collect();
    assert_eq!(unique.len(), deleted.len(), "a file deleted by two runs");
    assert_eq!(unique.len(), 900);
}
