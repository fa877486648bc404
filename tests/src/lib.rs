//! Helpers for the cross-program integration tests: build a real tree in a few lines, run
//! a real binary on it, snapshot the tree to prove a run changed nothing; and a real
//! S3-compatible server with a fault-injecting proxy ([`s3`]).

pub mod fuse;
pub mod loopfs;
pub mod s3;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The workspace's target directory for the current profile (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/{test}-{hash}
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/{profile}/deps")
        .to_path_buf()
}

/// A command for one of the workspace's binaries (`tmpa-compact`, ...), building it once
/// per test process so that `cargo test` alone is enough. Only the binary asked for is
/// built, so a test of one program does not depend on the others compiling.
///
/// The command runs the binary where cargo put it, under the checkout: for root only. A
/// program run as another user comes from [`ReachableBins`], since that user may not be
/// able to reach the checkout (a clone in `/root`, or under `mktemp -d`, is 0700).
pub fn bin(name: &str) -> Command {
    let mut cmd = Command::new(built(name));
    cmd.env_remove("TMPA_ROOT");
    if name == "tmpa-tmpclean" {
        clock_ahead(&mut cmd);
    }
    cmd
}

/// The path of the workspace's binary `name` in [`target_dir`], built once per test
/// process (see [`bin`]).
fn built(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    {
        let mut built = BUILT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !built.iter().any(|b| b == name) {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--workspace", "--bin", name])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build --bin {name} failed");
            built.push(name.to_owned());
        }
    }
    let path = target_dir().join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// libfaketime, Debian's `libfaketime` (tests/check.sh installs it).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How far ahead [`clock_ahead`] sets a program's clock.
pub const CLOCK_AHEAD_SECS: u64 = 70;

/// Runs `cmd` with its clock [`CLOCK_AHEAD_SECS`] ahead (libfaketime), so that files a
/// test wrote a moment ago are older than `--older-than 1m`, tmpclean's floor: a file's
/// ctime cannot be set back, and a test cannot wait a minute per run. The programs read
/// file times with raw system calls, which libfaketime does not change; only their idea
/// of "now" moves. [`bin`] does this for `tmpa-tmpclean`; a wrapper (strace, setpriv,
/// unshare) runs [`program_args`] instead, so that only the program loads libfaketime.
///
/// # Panics
/// When libfaketime is not installed.
pub fn clock_ahead(cmd: &mut Command) -> &mut Command {
    for (k, v) in clock_ahead_env() {
        cmd.env(k, v);
    }
    cmd
}

fn clock_ahead_env() -> [(&'static str, String); 3] {
    assert!(
        Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: apt-get install libfaketime (tests/check.sh does)"
    );
    [
        ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
        ("FAKETIME", format!("+{CLOCK_AHEAD_SECS}s")),
        // Time stamps from stat() are the file system's, not shifted.
        ("NO_FAKE_STAT", "1".to_owned()),
    ]
}

/// The command line that runs the program `name` behind a wrapper run as root (strace,
/// unshare): its path, and for `tmpa-tmpclean` first `env` with [`clock_ahead`]'s
/// variables, so that the wrapper itself runs on the real clock. Behind a wrapper that
/// switches to another user (setpriv), [`ReachableBins::program_args`] instead.
pub fn program_args(name: &str) -> Vec<std::ffi::OsString> {
    let path = built(name).into_os_string();
    if name != "tmpa-tmpclean" {
        return vec![path];
    }
    let mut args = clock_ahead_args();
    args.push(path);
    args
}

/// `env` and [`clock_ahead`]'s variables as its arguments.
fn clock_ahead_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["env".into()];
    args.extend(
        clock_ahead_env()
            .iter()
            .map(|(k, v)| format!("{k}={v}").into()),
    );
    args
}

/// Copies of the workspace's binaries in a fresh directory that every user can reach, for
/// the tests that run a program as another user (`runuser`, `setpriv`, a unit's `User=`):
/// the one way such a test gets the program it runs. The directory is removed on drop, or
/// by [`ReachableBins::close`].
///
/// # Why copies
/// Cargo builds the binaries under the checkout, and a checkout may lie below a directory
/// only its owner can enter: root's home (`/root` is 0700 on Debian) or any `mktemp -d`.
/// Another user cannot start a program there (`runuser: failed to execute ...: Permission
/// denied`). The copies are 0755, in a 0755 directory under the temporary directory
/// (`TMPDIR`, else `/tmp`), whose every ancestor others may search: checked when they are
/// made, so that a test fails at once, naming the directory, rather than later on a
/// program that never started.
///
/// # Not guaranteed
/// That the user can reach the rest of what the test gives it (the tree, a journal, a
/// configuration file): the test makes those reachable itself, as before.
///
/// # Examples
/// ```no_run
/// let bins = tmpa_tests::ReachableBins::copy(&["tmpa-compact"]);
/// let out = std::process::Command::new("runuser")
///     .args(["-u", "nobody", "--"])
///     .arg(bins.path("tmpa-compact"))
///     .arg("--version")
///     .output()
///     .expect("runuser");
/// let run = tmpa_tests::Run::from(out).started();
/// assert_eq!(run.code, 0);
/// ```
pub struct ReachableBins {
    dir: tempfile::TempDir,
}

impl ReachableBins {
    /// Builds the binaries `names` (as [`bin`] does) and copies them.
    ///
    /// # Panics
    /// At once, naming the directory and the remedy, when the temporary directory or one
    /// above it is not searchable by other users (set `TMPDIR` to a directory every user
    /// can reach, such as `/tmp`); when a copy fails, naming both paths.
    pub fn copy(names: &[&str]) -> ReachableBins {
        let tmp = std::env::temp_dir();
        let tmp = fs::canonicalize(&tmp)
            .unwrap_or_else(|e| panic!("the temporary directory {}: {e}", tmp.display()));
        if let Some((closed, mode)) = closed_ancestor(&tmp) {
            panic!(
                "{} (mode {mode:04o}) is closed to other users, so a program a test runs as \
                 another user cannot be placed in the temporary directory {} below it: set \
                 TMPDIR to a directory every user can reach (/tmp is, mode 1777)",
                closed.display(),
                tmp.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("tmpa-bins.")
            .tempdir_in(&tmp)
            .unwrap_or_else(|e| panic!("a directory in {}: {e}", tmp.display()));
        set_mode(dir.path(), 0o755);
        for name in names {
            let (from, to) = (built(name), dir.path().join(name));
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
            // Whatever the umask cargo ran with: every user may run the copy.
            set_mode(&to, 0o755);
        }
        ReachableBins { dir }
    }

    /// The copy of `name`.
    ///
    /// # Panics
    /// When `name` was not among the names given to [`ReachableBins::copy`].
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        assert!(
            p.is_file(),
            "{name} was not copied: name it in ReachableBins::copy"
        );
        p
    }

    /// The command line that runs the copy of `name` behind a wrapper that switches to
    /// another user (`setpriv`; under strace too): `env`, [`clock_ahead`]'s variables for
    /// `tmpa-tmpclean`, the copy's path. Through `env` for every program: setpriv still
    /// holds root's capabilities while it executes its command, so it could start a
    /// program the user cannot reach; `env` starts it as the user alone, as `runuser`,
    /// cron and systemd's `User=` do.
    pub fn program_args(&self, name: &str) -> Vec<std::ffi::OsString> {
        let mut args = if name == "tmpa-tmpclean" {
            clock_ahead_args()
        } else {
            vec!["env".into()]
        };
        args.push(self.path(name).into_os_string());
        args
    }

    /// Removes the copies.
    ///
    /// # Errors
    /// When the directory cannot be removed.
    pub fn close(self) -> std::io::Result<()> {
        self.dir.close()
    }
}

/// The first of `dir` and its ancestors that other users may not search (no `o+x`), with
/// its mode.
fn closed_ancestor(dir: &Path) -> Option<(PathBuf, u32)> {
    dir.ancestors().find_map(|a| {
        let mode = fs::metadata(a)
            .unwrap_or_else(|e| panic!("{}: {e}", a.display()))
            .mode()
            & 0o7777;
        (mode & 0o001 == 0).then(|| (a.to_path_buf(), mode))
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The exit statuses with which a wrapper (`env`, `nice`, `sh`, `setpriv`) says it could
/// not start its program: 126, found but not executable, or not reachable (`Permission
/// denied`); 127, not found. None of the workspace's programs exits with either.
const NOT_STARTED: [i32; 2] = [126, 127];

/// Fails the test, saying why, when a program run as another user never started: its
/// exit `code` is one a wrapper gives when it cannot execute its program (126, 127), or
/// `output` (what it printed) has `runuser` or `setpriv` saying so (`runuser` itself
/// exits 1).
///
/// # Panics
/// When the program never started.
pub fn assert_started(code: i32, output: &str) {
    let said = output.lines().any(|l| {
        (l.starts_with("runuser: ") || l.starts_with("setpriv: "))
            && l.contains("failed to execute")
    });
    assert!(
        !NOT_STARTED.contains(&code) && !said,
        "the program run as another user never started (exit {code}):\n{output}\n\
         A program run as another user must be a copy that user can reach \
         (tmpa_tests::ReachableBins), never the build under the checkout, which may lie \
         below a directory closed to it (docs/ARCHITECTURE.md, \"tests\")"
    );
}

/// Removes the shared-memory files libfaketime leaves behind when a program that loaded
/// it was killed (it removes its own on a normal exit).
pub fn faketime_leftovers_removed() {
    let Ok(rd) = fs::read_dir("/dev/shm") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("faketime_shm_")
            .or_else(|| name.strip_prefix("sem.faketime_sem_"));
        if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// What a program printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// This run, once checked that its program started ([`assert_started`] on its exit
    /// code and stderr): for a program run as another user.
    ///
    /// # Panics
    /// When the program never started.
    #[must_use]
    pub fn started(self) -> Run {
        assert_started(self.code, &self.stderr);
        self
    }

    /// stdout with RFC 3339 times replaced by `<TIME>` and `root` by `<ROOT>`, for
    /// comparing runs.
    pub fn stable_stdout(&self, root: &Path) -> String {
        normalize(&self.stdout, root)
    }

    /// The stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Replaces times, durations and the root path so that two runs' outputs compare equal.
pub fn normalize(s: &str, root: &Path) -> String {
    let s = s.replace(&root.display().to_string(), "<ROOT>");
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                let looks_like_time = w.len() >= 19
                    && w.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                    && w.as_bytes()[4] == b'-'
                    && w.contains('T')
                    && w.contains(':');
                if looks_like_time {
                    "<TIME>".to_owned()
                } else {
                    w.to_owned()
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// A temporary TMPA tree.
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    /// A root with the three data directories.
    pub fn new() -> Tree {
        let t = Tree::bare();
        for d in ["notifications", "token_stats", "chat_history"] {
            fs::create_dir(t.root().join(d)).expect("mkdir");
        }
        t
    }

    /// An empty directory (not a TMPA root).
    pub fn bare() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The root path.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` at `rel` (creating directories); returns the path.
    pub fn file(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir -p");
        fs::write(&p, bytes).expect("write");
        p
    }

    /// Writes a valid loose event `token_stats/{day}/evt_{id}.json`.
    pub fn event(&self, day: &str, id: &str, user: &str, prompt: u64, completion: u64) -> PathBuf {
        self.file(
            format!("token_stats/{day}/evt_{id}.json"),
            event_json(
                id,
                &format!("{day}T12:00:00Z"),
                user,
                "gpt-x",
                prompt,
                completion,
            ),
        )
    }

    /// Runs `program` with `--root {root}` and `args`.
    pub fn run(&self, program: &str, args: &[&str]) -> Run {
        bin(program)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .expect("run program")
            .into()
    }

    /// Every entry under the root except `.tmpa/`: path → (kind, size, mtime ns, content
    /// hash for files, link target for symlinks). Equal snapshots mean nothing changed.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        snapshot(self.root(), &[".tmpa"])
    }
}

/// Saves `path` the way the library and the Python backend do: a temporary in the same
/// directory, then a rename over the name (a writer acting in a program's instant).
pub fn save_by_rename(path: &Path, bytes: &str) {
    let tmp = path.with_extension("json.writer-tmp");
    fs::write(&tmp, bytes).expect("write temporary");
    fs::rename(&tmp, path).expect("rename over");
}

/// A writer that reuses a fixed temporary name, as a Python backend's `open(x.tmp, "w")`,
/// write, fsync, `os.rename` does: saves `{"saved":true}` as `final` through
/// `{final}.tmp` and prints `saved`.
pub fn save_through_fixed_temporary(fin: &Path) -> std::process::Output {
    const WRITER: &str = r#"
import os, sys
final = sys.argv[1]
with open(final + ".tmp", "w") as f:
    f.write('{"saved":true}')
    f.flush()
    os.fsync(f.fileno())
os.rename(final + ".tmp", final)
print("saved")
"#;
    Command::new("python3")
        .args(["-c", WRITER])
        .arg(fin)
        .output()
        .expect("python3")
}

/// A run that was refused at its start (a usage or configuration error) wrote nothing but
/// its run record, `.tmpa/runs/{task}.json`, which says exit 2 (docs/FORMAT.md "Program
/// state": every run leaves one).
///
/// # Panics
/// When `.tmpa/` holds anything else, or the record says otherwise.
pub fn only_a_usage_error_record(root: &Path, task: &str) {
    let state: Vec<PathBuf> = snapshot(&root.join(".tmpa"), &[])
        .into_keys()
        .filter(|p| !root.join(".tmpa").join(p).is_dir())
        .collect();
    let record = PathBuf::from("runs").join(format!("{task}.json"));
    assert_eq!(
        state,
        std::slice::from_ref(&record),
        "a refused run wrote more than its run record"
    );
    let text = fs::read(root.join(".tmpa").join(&record)).expect("run record");
    let doc: serde_json::Value = serde_json::from_slice(&text).expect("run record JSON");
    assert_eq!(doc["exit_code"], 2, "{doc}");
}

/// Snapshot of everything under `dir` (see [`Tree::snapshot`]), skipping top-level names
/// in `skip`.
pub fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, String>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(base).expect("under base").to_path_buf();
        if dir == base && skip.iter().any(|s| rel.as_os_str() == *s) {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let stamp = format!("{}.{}", m.mtime(), m.mtime_nsec());
        let desc = if m.file_type().is_symlink() {
            format!("link {:?}", fs::read_link(&p).ok())
        } else if m.is_dir() {
            walk(base, &p, skip, out);
            format!("dir mode={:o}", m.mode())
        } else if m.is_file() {
            let bytes = fs::read(&p).unwrap_or_default();
            format!(
                "file len={} mtime={stamp} mode={:o} sha={}",
                m.len(),
                m.mode(),
                tmpa_core::maintenance::sha256_hex(&bytes)
            )
        } else {
            format!("special mode={:o}", m.mode())
        };
        out.insert(rel, desc);
    }
}

/// Every receipt line of every run of `task` under `root` (none when it never deleted);
/// each line must be JSON.
pub fn receipt_lines(root: &Path, task: &str) -> Vec<serde_json::Value> {
    read_receipts(root, task, false)
}

/// Like [`receipt_lines`], for a tree whose runs may have been killed: a run killed while
/// appending may leave its file's last line torn (the files it names were then not
/// deleted yet), which is skipped; any other line must be JSON.
pub fn receipt_lines_after_kills(root: &Path, task: &str) -> Vec<serde_json::Value> {
    read_receipts(root, task, true)
}

/// Waits until `child`, a run of `task` under `root`, has written a receipt line (at most
/// a minute): the moment a slowed-down run is between its receipt and its deletions,
/// without guessing a time that a slow machine would miss.
///
/// # Panics
/// When no line comes within a minute; at once when `child` ends without one, with its
/// status and stderr (when piped), saying so if it never started ([`assert_started`]).
pub fn wait_for_receipt_line(child: &mut std::process::Child, root: &Path, task: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while receipt_lines_after_kills(root, task).is_empty() {
        let ended = child.try_wait().expect("wait for the run");
        if let Some(status) = ended {
            if !receipt_lines_after_kills(root, task).is_empty() {
                return;
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            assert_started(status.code().unwrap_or(-1), &stderr);
            panic!("{task}: the run ended ({status}) without a receipt line:\n{stderr}");
        }
        assert!(
            std::time::Instant::now() < until,
            "{task} wrote no receipt line in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn read_receipts(root: &Path, task: &str, torn_last_line_skipped: bool) -> Vec<serde_json::Value> {
    let Ok(rd) = fs::read_dir(root.join(".tmpa/receipts").join(task)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd {
        let text = fs::read_to_string(e.expect("entry").path()).expect("receipt");
        let complete = if torn_last_line_skipped {
            &text[..text.rfind('\n').map_or(0, |i| i + 1)]
        } else {
            &text[..]
        };
        for line in complete.lines() {
            // Every line is one of the receipt's typed lines (delete, kept, recovered),
            // read through the program's own type, with nothing unknown in it: a field
            // renamed or added without the type fails here.
            let typed: tmpa_maint::ReceiptLine = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("receipt line is not a ReceiptLine ({e}): {line}"));
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(
                serde_json::to_value(&typed).expect("serializes"),
                value,
                "the receipt line reads back through ReceiptLine unchanged"
            );
            out.push(value);
        }
    }
    out
}

/// How many events the library reads in `days` of the tree at `root` (compacted and
/// loose, each id once): what "nothing lost" is checked against.
pub fn events_in_days(root: &Path, days: &[&str]) -> usize {
    let rt = tmpa_core::Root::open(root).expect("root");
    days.iter()
        .map(|d| {
            rt.read_day(d.parse().expect("day"))
                .expect("read")
                .events
                .len()
        })
        .sum()
}

/// The JSON of a valid event.
pub fn event_json(
    id: &str,
    ts: &str,
    user: &str,
    model: &str,
    prompt: u64,
    completion: u64,
) -> String {
    format!(
        r#"{{"id":"{id}","ts":"{ts}","user_id":"{user}","model":"{model}","prompt_tokens":{prompt},"completion_tokens":{completion}}}"#
    )
}

/// Sets a file's (or symlink's own) modification time to `age` ago.
pub fn age(path: &Path, age: Duration) {
    let t = SystemTime::now() - age;
    let ts = rustix::fs::Timestamps {
        last_access: to_timespec(t),
        last_modification: to_timespec(t),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &ts,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

fn to_timespec(t: SystemTime) -> rustix::fs::Timespec {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after epoch");
    rustix::fs::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Runs `cmd` (a tool: dpkg, podman, lintian), failing the test with its output unless
/// it exits 0.
///
/// # Panics
/// When it cannot be started or exits otherwise.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed? tests/check.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`run_ok`]'s standard output, as text.
///
/// # Panics
/// As [`run_ok`], or when the output is not UTF-8.
pub fn stdout_ok(cmd: &mut Command) -> String {
    String::from_utf8(run_ok(cmd).stdout).expect("utf-8")
}

/// The variable that lets a test whose prerequisite is missing skip instead of failing.
pub const ALLOW_SKIP: &str = "TMPA_ALLOW_SKIP";

/// A test's prerequisite (root, a tool, a kernel feature): `Some` of what was found (`()`
/// for a condition) when it is there. When it is missing, the test fails, naming what is
/// missing: the tests run everything in CI (tests/check.sh runs as root and installs every
/// tool). Only with [`ALLOW_SKIP`] set (a developer's machine without root) it prints
/// `SKIPPED: {what}` and returns `None`, and the caller must then return: the result is
/// `#[must_use]`, so the compiler holds every caller to
/// `let Some(found) = prerequisite(...) else { return };` (or `?` in a helper that returns
/// an `Option`), and no test can go on without what it needs.
///
/// # Panics
/// When the prerequisite is missing, unless `TMPA_ALLOW_SKIP` is set.
///
/// # Examples
/// ```no_run
/// # fn a_test() {
/// let Some(()) = tmpa_tests::prerequisite(tmpa_tests::is_root(), "needs root") else {
///     return;
/// };
/// # }
/// ```
#[must_use = "a test whose prerequisite is missing must return: `let Some(..) = prerequisite(..) else { return }`"]
pub fn prerequisite<F: Found>(found: F, what: &str) -> Option<F::Value> {
    let found = found.found();
    if found.is_none() {
        missing_prerequisite(what);
    }
    found
}

/// What [`prerequisite`] takes: a condition (`true`: there), or an `Option` of the thing
/// (a mount, a guard) that is `None` when it could not be had.
pub trait Found {
    /// What the test gets when the prerequisite is there.
    type Value;
    /// `Some` when the prerequisite is there.
    fn found(self) -> Option<Self::Value>;
}

impl Found for bool {
    type Value = ();
    fn found(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Found for Option<T> {
    type Value = T;
    fn found(self) -> Option<T> {
        self
    }
}

/// Fails the test naming `what`, or with [`ALLOW_SKIP`] prints `SKIPPED: {what}`; only
/// [`prerequisite`] calls it, so that its caller gets the `None` it must return on.
fn missing_prerequisite(what: &str) {
    if std::env::var_os(ALLOW_SKIP).is_some() {
        eprintln!("SKIPPED: {what}");
        return;
    }
    panic!(
        "missing prerequisite: {what} (bash tests/check.sh as root provides it; \
         set {ALLOW_SKIP}=1 to skip such tests instead)"
    );
}

/// systemd's journal writer for a journal in the export format (package
/// systemd-journal-remote): the tests write real journal files with it, which the patrol
/// reads with the real journalctl.
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// A journal in `dir` holding `entries` (unit, how long ago, message), as journald stores
/// the lines of a unit's output. `None` (the test returns) when the writer is missing and
/// [`ALLOW_SKIP`] is set.
///
/// # Panics
/// When the writer fails, or is missing without [`ALLOW_SKIP`].
pub fn journal(dir: &Path, entries: &[(&str, Duration, String)]) -> Option<()> {
    prerequisite(
        Path::new(JOURNAL_REMOTE).exists(),
        "systemd-journal-remote (package systemd-journal-remote)",
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let mut export = String::new();
    for (i, (unit, ago, message)) in entries.iter().enumerate() {
        assert!(!message.contains('\n'));
        // Entries of one instant keep their order: a microsecond apart.
        let at = (now - *ago).as_micros() + i as u128;
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={at}\n_SYSTEMD_UNIT={unit}\n_TRANSPORT=stdout\n\
             SYSLOG_IDENTIFIER={}\nPRIORITY=6\nMESSAGE={message}\n\n",
            unit.trim_end_matches(".service")
        ));
    }
    std::fs::create_dir_all(dir).expect("mkdir");
    let input = dir.join("entries.export");
    std::fs::write(&input, export).expect("export");
    let out = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg(&input)
        .output()
        .expect("systemd-journal-remote");
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(&input).expect("rm export");
    Some(())
}

/// Gives `path` and everything under it to `uid`:`gid` (`lchown`: a symlink itself,
/// never what it points to), as a tree another user owns.
///
/// # Panics
/// When a chown fails (the tests that call it run as root).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for e in fs::read_dir(path).expect("ls") {
            chown_tree(&e.expect("entry").path(), uid, gid);
        }
    }
}

/// Whether strace can inject faults here (installed, and allowed to trace).
pub fn strace_works() -> bool {
    Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=getpid:error=EIO",
            "true",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// `strace -f -qq -o /dev/null -e inject={inject} {program}`: the workspace binary
/// `program` (through [`program_args`]: tmpclean with its clock ahead) with a fault (`fsync:error=EIO:when=3`) or a delay
/// (`linkat:delay_enter=200000`) injected from outside. strace must be installed
/// (tests/check.sh installs it): a test that needs it fails without it.
pub fn strace_inject(inject: &str, program: &str) -> Command {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={inject}"))
        .args(program_args(program))
        .env_remove("TMPA_ROOT");
    cmd
}

/// Whether this process may use root-only tools (tmpfs mounts, `chattr +i`).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A small tmpfs mounted at a fresh directory, unmounted on drop. `None` when not root or
/// the mount fails (the caller skips the test and says so).
pub struct Tmpfs {
    /// The mount point.
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"2m"`) with at most `inodes` inodes.
    pub fn mount(size: &str, inodes: u64) -> Option<Tmpfs> {
        if !is_root() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},nr_inodes={inodes}"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .ok()?
            .success();
        ok.then_some(Tmpfs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `chattr +i` on `path`, undone on drop (so the temp dir can be removed).
pub struct Immutable(PathBuf);

impl Immutable {
    /// Makes `path` immutable; `None` when `chattr` fails (not root, unsupported fs).
    pub fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .ok()?
            .success();
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Makes a FIFO at `path` (a named pipe: opening it for reading blocks until a writer
/// comes, which is what the programs must never do).
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
}

/// Two dry runs on an unchanged tree printed the same text apart from times and the root,
/// and the first line says DRY-RUN.
pub fn assert_same_dry_runs(root: &Path, a: &Run, b: &Run) {
    assert_eq!(normalize(&a.stdout, root), normalize(&b.stdout, root));
    let first = a.stdout.lines().next().unwrap_or_default();
    assert!(first.contains("DRY-RUN"), "first line: {first:?}");
}

/// `program` run on a directory that is not a TMPA root exits 2, says so, and writes
/// nothing there (docs/FORMAT.md "The tree").
pub fn assert_refuses_non_root(program: &str) {
    let bare = Tree::bare();
    let r = bare.run(program, &[]);
    assert_eq!(r.code, 2, "{program}: {r:?}");
    assert!(
        r.stderr.contains("not a TMPA root"),
        "{program}: {}",
        r.stderr
    );
    assert_eq!(
        fs::read_dir(bare.root()).expect("ls").count(),
        0,
        "{program} wrote into a directory that is not a root"
    );
}
