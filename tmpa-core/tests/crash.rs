//! The crash test of docs/FORMAT.md "Temporaries": a child process rewrites one file in a loop with
//! `tmpa_core::write` and is killed with SIGKILL at random moments, many times. Every read
//! (after each kill, and by a reader thread all along) sees one whole content, never a
//! part; completed writes leave no temporary behind.
//!
//! The child is this test binary itself, re-run with `CHILD_ENV` set and `--exact
//! child_rewrites_one_file_in_a_loop`; without the variable that test does nothing.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Set (to the file's path) only in the child process.
const CHILD_ENV: &str = "TMPA_CRASH_CHILD";
/// In the child: stop after this many writes and exit normally (unset: write forever).
const CHILD_WRITES_ENV: &str = "TMPA_CRASH_CHILD_WRITES";
/// The child test's name, for `--exact`.
const CHILD_TEST: &str = "child_rewrites_one_file_in_a_loop";
/// What the child prints once it starts its loop.
const READY: &str = "tmpa-crash-child-ready";

/// How many times a child is killed.
const KILLS: u32 = 200;
/// Largest content written, in bytes: several 64 KiB buffers and many pages, so that a kill
/// often lands in the middle of the data, not only between syscalls.
const CONTENT_BYTES_MAX: usize = 512 * 1024;
/// Longest a child runs before it is killed; its writes take about a millisecond each.
const KILL_AFTER_US_MAX: u64 = 20_000;

/// A small xorshift generator: no dependency, and a printed seed replays a run.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A self-checking content: `{"n": n, "pad": "...", "sha256": hex(sha256("{n}:{pad}"))}`,
/// padded to a random size between a few bytes and `CONTENT_BYTES_MAX`.
fn content(n: u64, rng: &mut Rng) -> Vec<u8> {
    // Sizes spread over every order of magnitude, not mostly near the maximum.
    let bits = rng.below(20);
    let pad_len = (rng.below(1 << bits) as usize).min(CONTENT_BYTES_MAX - 128);
    let pad: String = (0..pad_len)
        .map(|_| char::from(b'a' + (rng.below(26) as u8)))
        .collect();
    let sum = checksum(n, &pad);
    serde_json::to_vec(&serde_json::json!({"n": n, "pad": pad, "sha256": sum})).unwrap()
}

fn checksum(n: u64, pad: &str) -> String {
    let digest = Sha256::digest(format!("{n}:{pad}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The counter of a complete content; panics, naming `who`, on anything else.
fn check(bytes: &[u8], who: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{who}: partial or corrupt content ({} bytes): {e}",
            bytes.len()
        )
    });
    let n = v["n"].as_u64().expect("counter");
    let pad = v["pad"].as_str().expect("padding");
    assert_eq!(
        v["sha256"].as_str(),
        Some(checksum(n, pad).as_str()),
        "{who}: checksum mismatch at n={n}"
    );
    n
}

/// The child: rewrites `CHILD_ENV`'s file in a loop, each content numbered one more than
/// the last complete one on disk. Does nothing in an ordinary test run.
#[test]
fn child_rewrites_one_file_in_a_loop() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = PathBuf::from(path);
    let writes_max: Option<u64> = std::env::var(CHILD_WRITES_ENV)
        .ok()
        .map(|s| s.parse().unwrap());
    let mut n = check(&fs::read(&path).unwrap(), "child at start");
    let mut rng = Rng::seeded();
    println!("{READY}");
    let mut done = 0;
    while writes_max.is_none_or(|m| done < m) {
        n += 1;
        tmpa_core::write(&path, &content(n, &mut rng)).unwrap();
        done += 1;
    }
}

fn spawn_child(path: &Path, writes_max: Option<u64>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .env_remove(CHILD_WRITES_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = writes_max {
        cmd.env(CHILD_WRITES_ENV, m.to_string());
    }
    cmd.spawn().unwrap()
}

/// Waits (at most 10 s) for the child's ready line, then keeps draining its output so
/// that the harness's last lines do not hit a closed pipe.
fn wait_ready(child: &mut Child) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            // libtest prints "test {name} ... " without a newline before the test runs.
            if line.is_ok_and(|l| l.ends_with(READY)) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(10)).is_err() {
        let _ = child.kill();
        panic!("child not ready within 10 s: {:?}", child.wait());
    }
}

/// The temporaries in `dir`; panics on any entry that is neither `name` nor one of its
/// temporaries `{name}.tmp.*`.
fn temporaries(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let mut tmps = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let entry_name = entry.file_name();
        if entry_name == name {
            continue;
        }
        let mut prefix = name.to_os_string();
        prefix.push(".tmp.");
        assert!(
            entry_name
                .as_encoded_bytes()
                .starts_with(prefix.as_encoded_bytes()),
            "unexpected entry {entry_name:?}"
        );
        assert_eq!(
            tmpa_core::temp_final_name(&entry_name),
            Some(name),
            "{entry_name:?} is not recognised as a temporary of {name:?}"
        );
        tmps.push(entry.path());
    }
    tmps
}

/// A reader thread that reads the file without pause until told to stop, checking each
/// read is complete and the counter never goes back; returns the number of reads.
fn spawn_reader(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let (mut reads, mut last) = (0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let n = check(&fs::read(&path).unwrap(), "reader thread");
            assert!(
                n >= last,
                "reader thread: counter went back from {last} to {n}"
            );
            last = n;
            reads += 1;
        }
        reads
    })
}

/// A child rewriting one file is SIGKILLed at 200 random moments: the file always holds a
/// whole content, the counter never goes back, and each kill leaves at most one temporary.
#[test]
fn sigkill_during_rewrites_never_leaves_a_partial_file() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::new("state.json");
    let path = dir.path().join(name);
    let mut rng = Rng::seeded();
    println!("crash test seed: {}", rng.0);
    tmpa_core::write(&path, &content(0, &mut rng)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(path.clone(), Arc::clone(&stop));
    let (mut last, mut leftovers, mut progressed) = (0u64, 0usize, 0u32);
    let mut longest_kill_us = 0;
    for kill in 0..KILLS {
        let mut child = spawn_child(&path, None);
        wait_ready(&mut child);
        let after = rng.below(KILL_AFTER_US_MAX);
        longest_kill_us = longest_kill_us.max(after);
        std::thread::sleep(Duration::from_micros(after));
        assert!(
            child.try_wait().unwrap().is_none(),
            "child #{kill} exited on its own"
        );
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let n = check(&fs::read(&path).unwrap(), &format!("after kill #{kill}"));
        assert!(
            n >= last,
            "after kill #{kill}: counter went back from {last} to {n}"
        );
        progressed += u32::from(n > last);
        last = n;
        // Only the write the kill interrupted may have left its temporary (the child
        // writes one file at a time); it is named `{final}.tmp.*`, and recognised.
        let tmps = temporaries(dir.path(), name);
        assert!(
            tmps.len() <= 1,
            "after kill #{kill}: more than one temporary: {tmps:?}"
        );
        leftovers += tmps.len();
        // Cleaned, as tmpa-tmpclean would, so that the next kill's count is its own.
        for t in tmps {
            fs::remove_file(t).unwrap();
        }
    }

    // A child that is not killed: once its writes completed, no temporary at all.
    let mut child = spawn_child(&path, Some(20));
    wait_ready(&mut child);
    assert!(child.wait().unwrap().success());
    let n = check(&fs::read(&path).unwrap(), "after the last child");
    assert_eq!(n, last + 20);
    assert_eq!(temporaries(dir.path(), name), Vec::<PathBuf>::new());

    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader thread saw a partial file");
    println!(
        "{KILLS} kills (after up to {} us), {progressed} with progress, {leftovers} \
         temporaries left by interrupted writes, {reads} concurrent reads, final n = {n}, {:?}",
        longest_kill_us,
        started.elapsed()
    );
    // The kills must have landed among writes, not all before the first one (a loose
    // bound: on a loaded machine a write with its two fsyncs can take most of the delay).
    assert!(
        progressed >= KILLS / 10,
        "only {progressed} children wrote anything"
    );
    assert!(reads > 0);
}
