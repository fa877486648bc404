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

/// Hostile entries in a day directory: a 2 GiB sparse "event", a socket and a character
/// device with event names, a name with a newline (its content is not JSON), a valid event
/// with a 255-byte file name, a hard link to a file outside the root. No panic, no hang,
/// nothing outside changed, each problem named, the valid events read.
#[test]
fn hostile_entries_in_a_day_are_reported_not_trusted() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let decoy = decoy();
    let before = snapshot(decoy.path(), &[]);
    t.event(D1, "fine", "u", 1, 1);
    let day = t.root().join(format!("token_stats/{D1}"));
    let huge = fs::File::create(day.join("evt_huge.json")).expect("create");
    huge.set_len(2 << 30).expect("sparse 2 GiB");
    let _sock = std::os::unix::net::UnixListener::bind(day.join("evt_sock.json")).expect("socket");
    let dev = rustix::fs::mknodat(
        rustix::fs::CWD,
        day.join("evt_null.json"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    );
    let newline = std::ffi::OsStr::from_bytes(b"evt_new\nline.json");
    fs::write(
        day.join(newline),
        event_json("new\nline", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("w");
    let long_id = "x".repeat(255 - "evt_.json".len());
    fs::write(
        day.join(format!("evt_{long_id}.json")),
        event_json(&long_id, "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("255-byte name");
    // A hard link to a decoy file: an ordinary file inside the root as far as the kernel
    // can tell. Its id differs from its name, so it is corrupt and kept.
    fs::hard_link(
        decoy.path().join("evt_decoy0.json"),
        day.join("evt_hard.json"),
    )
    .expect("hard link");
    for args in [&["--day", D1, "--dry-run"][..], &["--day", D1]] {
        let r = t.run("tmpa-compact", args);
        assert_eq!(r.code, 1, "{r:?}");
        for name in ["evt_huge.json", "evt_sock.json", "evt_hard.json"] {
            assert!(
                r.stdout.contains(name),
                "{name} not reported:\n{}",
                r.stdout
            );
        }
        assert!(r.stdout.contains("larger than the limit"), "{}", r.stdout);
        assert!(r.stdout.contains("not a regular file"), "{}", r.stdout);
    }
    let read = Root::open(t.root())
        .expect("root")
        .read_day(D1.parse().expect("day"))
        .expect("read");
    let mut ids: Vec<&str> = read.events.iter().map(|e| e.id().as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec!["fine", long_id.as_str()],
        "a 255-byte file name is a valid event (SPEC §2); the newline one is not JSON; \
         nothing else is trusted"
    );
    assert!(day.join("evt_huge.json").exists() && day.join("evt_hard.json").exists());
    if dev.is_ok() {
        assert!(day.join("evt_null.json").exists());
    }
    assert_eq!(snapshot(decoy.path(), &[]), before);
}

/// Names that are not UTF-8 or hold a newline: every report stays one line per problem,
/// the JSON report still serializes, and the names are shown escaped.
#[test]
fn odd_names_keep_reports_one_line_and_json_valid() {
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    t.event(D1, "ok", "u", 1, 1);
    let day = t.root().join(format!("token_stats/{D1}"));
    fs::write(
        day.join(std::ffi::OsStr::from_bytes(b"evt_\xff\xfe.json")),
        b"{}",
    )
    .expect("w");
    fs::write(
        day.join(std::ffi::OsStr::from_bytes(b"evt_a\nb.json")),
        b"{}",
    )
    .expect("w");
    let r = t.run("tmpa-compact", &["--day", D1, "--dry-run"]);
    assert_eq!(r.code, 1, "{r:?}");
    let problem_lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("problem:"))
        .collect();
    assert_eq!(problem_lines.len(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("\\xFF\\xFE"), "{}", r.stdout);
    assert!(r.stdout.contains("evt_a\\nb.json"), "{}", r.stdout);
    let json = t.run("tmpa-compact", &["--day", D1, "--json"]).json();
    assert_eq!(
        json["days"][0]["problems"]
            .as_array()
            .expect("problems")
            .len(),
        2
    );
    assert_eq!(json["exit_code"], 1);
}

/// While archivals (real and dry) run, another thread keeps swapping a user's sessions/
/// and archive/ directories with symlinks to a decoy outside the root that holds old
/// sessions. Nothing outside the root changes, and every real session ends archived
/// exactly once with its bytes.
#[test]
fn session_directories_swapped_for_symlinks_while_archiving() {
    let t = Tree::new();
    let decoy = tempfile::tempdir().expect("tempdir");
    let old = Duration::from_secs(90 * 86_400);
    for i in 0..50 {
        let p = decoy.path().join(format!("s{i:04}.json"));
        fs::write(&p, format!("{{\"decoy\":{i}}}")).expect("write");
        tmpa_tests::age(&p, old);
    }
    let before = snapshot(decoy.path(), &[]);
    let n = 400;
    let mut want = Vec::new();
    for i in 0..n {
        let body = format!("{{\"real\":{i},\"pad\":\"{}\"}}", "x".repeat(i * 7 % 3000));
        let p = t.file(format!("chat_history/u/sessions/s{i:04}.json"), &body);
        tmpa_tests::age(&p, old);
        want.push(body);
    }
    fs::create_dir_all(t.root().join("chat_history/u/archive")).expect("mkdir");
    let user = t.root().join("chat_history/u");
    let pairs: Vec<(std::path::PathBuf, std::path::PathBuf)> = ["sessions", "archive"]
        .iter()
        .map(|d| {
            let link = user.join(format!(".swap-{d}"));
            std::os::unix::fs::symlink(decoy.path(), &link).expect("symlink");
            (user.join(d), link)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, swaps, pairs) = (stop.clone(), swaps.clone(), pairs.clone());
        std::thread::spawn(move || {
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let (dir, link) = &pairs[k % 2];
                k += 1;
                if exchange(dir, link) {
                    swaps.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(300));
                    assert!(exchange(dir, link), "swap back");
                }
                std::thread::sleep(Duration::from_micros(700));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut runs = 0;
    while Instant::now() < deadline {
        for args in [&["--dry-run"][..], &["--level", "1"]] {
            let r = t.run("tmpa-archive", args);
            assert!(!r.stderr.contains("panicked"), "{r:?}");
            assert!([0, 1, 4].contains(&r.code), "{r:?}");
            runs += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    assert_eq!(
        snapshot(decoy.path(), &[]),
        before,
        "the decoy outside the root changed"
    );
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let root = Root::open(t.root()).expect("root");
    let u = tmpa_core::UserId::new("u").expect("user");
    let listed = root.list_sessions(&u).expect("list");
    assert_eq!(listed.len(), n, "every real session, and no decoy one");
    for (i, body) in want.iter().enumerate() {
        let s = tmpa_core::SessionId::new(format!("s{i:04}")).expect("id");
        assert!(listed.contains(&(s.clone(), tmpa_core::SessionLocation::Archived)));
        assert_eq!(
            root.read_session(&u, &s).expect("archived"),
            body.as_bytes()
        );
    }
    eprintln!(
        "swap race: {} swaps during {runs} archive runs",
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        swaps.load(Ordering::Relaxed) > 100,
        "the race helper hardly ran"
    );
}

/// Runs `cmd` with a deadline; a program that blocks (on a FIFO, say) fails the test
/// instead of hanging it.
fn run_bounded(mut cmd: std::process::Command, limit: Duration) -> tmpa_tests::Run {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (mut out, mut err) = (
        child.stdout.take().expect("out"),
        child.stderr.take().expect("err"),
    );
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}: it blocked");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    tmpa_tests::Run {
        code: status.code().unwrap_or(-1),
        stdout: reader.join().expect("stdout"),
        stderr: ereader.join().expect("stderr"),
    }
}

/// One hostile tree against all four programs, dry and real: symlinks and hard links to
/// files outside the root named like events, sessions and temporaries; symlinked user
/// directories; FIFOs, sockets and device nodes with data names; newline, invalid UTF-8
/// and 255-byte names; a 2 GiB sparse event and a 300 MiB sparse session; nesting bombs;
/// an id holding `../`. No program hangs or panics, nothing outside the root changes,
/// and each program names the entries it refused.
#[test]
fn all_programs_on_a_hostile_tree() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = Tree::new();
    let outside = decoy();
    let before = snapshot(outside.path(), &[]);
    let old = Duration::from_secs(90 * 86_400);
    let day = t.root().join(format!("token_stats/{D1}"));
    let sessions = t.root().join("chat_history/u/sessions");
    fs::create_dir_all(&day).expect("mkdir");
    fs::create_dir_all(&sessions).expect("mkdir");
    t.event(D1, "fine", "u", 1, 1);
    let fine = t.file("chat_history/u/sessions/fine.json", "{}");
    tmpa_tests::age(&fine, old);
    let sym = |target: &Path, link: std::path::PathBuf| std::os::unix::fs::symlink(target, link);
    // Links out of the root, named like data.
    sym(
        &outside.path().join("evt_decoy0.json"),
        day.join("evt_link.json"),
    )
    .expect("ln");
    fs::hard_link(
        outside.path().join("evt_decoy1.json"),
        day.join("evt_decoy1.json"),
    )
    .expect("ln");
    sym(&outside.path().join("s.json"), sessions.join("linked.json")).expect("ln");
    sym(
        &outside.path().join("s.json"),
        sessions.join("fine.json.tmp"),
    )
    .expect("ln");
    sym(outside.path(), t.root().join("chat_history/evil")).expect("ln");
    sym(outside.path(), t.root().join("notifications/evil")).expect("ln");
    // Special files with data names.
    let mknod = |p: std::path::PathBuf, kind: rustix::fs::FileType, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p.as_path(),
            kind,
            rustix::fs::Mode::from_raw_mode(0o644),
            dev,
        )
        .expect("mknod");
    };
    mknod(day.join("evt_fifo.json"), rustix::fs::FileType::Fifo, 0);
    mknod(sessions.join("fifo.json"), rustix::fs::FileType::Fifo, 0);
    mknod(
        sessions.join("fine.json.tmp.1"),
        rustix::fs::FileType::Fifo,
        0,
    );
    mknod(
        day.join("evt_null.json"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    let _sock = std::os::unix::net::UnixListener::bind(day.join("evt_sock.json")).expect("socket");
    // Odd names.
    for name in [
        OsStr::from_bytes(b"evt_\xfe\xff.json"),
        OsStr::new("evt_new\nline.json"),
    ] {
        fs::write(day.join(name), "{}").expect("odd");
    }
    let long = format!("{}.json", "s".repeat(250));
    let p = sessions.join(&long);
    fs::write(&p, "{}").expect("long name");
    tmpa_tests::age(&p, old);
    let p = sessions.join(OsStr::from_bytes(b"bad\xff.json"));
    fs::write(&p, "{}").expect("odd");
    tmpa_tests::age(&p, old);
    // Huge (sparse) files and nesting bombs.
    let huge = fs::File::create(day.join("evt_huge.json")).expect("huge");
    huge.set_len(2 << 30).expect("sparse");
    let huge = fs::File::create(sessions.join("huge.json")).expect("huge");
    huge.set_len(300 << 20).expect("sparse");
    drop(huge);
    tmpa_tests::age(&sessions.join("huge.json"), old);
    fs::write(day.join("evt_bomb.json"), "[".repeat(1 << 20)).expect("bomb");
    let bomb = sessions.join("bomb.json");
    fs::write(&bomb, "{\"a\":".repeat(1 << 18)).expect("bomb");
    tmpa_tests::age(&bomb, old);
    fs::write(
        day.join("evt_dots.json"),
        event_json("../../etc/passwd", "2026-11-01T00:00:00Z", "u", "m", 1, 1),
    )
    .expect("dots");

    let limit = Duration::from_secs(120);
    let cases: [(&str, &[&str], &[i32]); 7] = [
        (
            "tmpa-compact",
            &["--before", "2026-11-02", "--dry-run"],
            &[1],
        ),
        ("tmpa-compact", &["--before", "2026-11-02"], &[1]),
        ("tmpa-archive", &["--dry-run"], &[1]),
        ("tmpa-archive", &[], &[1]),
        (
            "tmpa-tmpclean",
            &["--dry-run", "--older-than", "1m"],
            &[0, 1],
        ),
        ("tmpa-tmpclean", &["--older-than", "1m"], &[0, 1]),
        ("tmpa-patrol", &["--json"], &[1, 2]),
    ];
    let mut outputs = std::collections::BTreeMap::new();
    for (program, args, codes) in cases {
        let mut cmd = tmpa_tests::bin(program);
        cmd.arg("--root").arg(t.root()).args(args);
        let r = run_bounded(cmd, limit);
        assert!(!r.stderr.contains("panicked"), "{program} {args:?}: {r:?}");
        assert!(
            codes.contains(&r.code),
            "{program} {args:?} exit {}: {r:?}",
            r.code
        );
        assert_eq!(
            snapshot(outside.path(), &[]),
            before,
            "{program} {args:?} changed the decoy outside the root"
        );
        outputs
            .entry(program)
            .or_insert_with(String::new)
            .push_str(&r.stdout);
    }
    let named = |program: &str, what: &[&str]| {
        for w in what {
            assert!(
                outputs[program].contains(w),
                "{program} did not name {w}:\n{}",
                outputs[program]
            );
        }
    };
    named(
        "tmpa-compact",
        &[
            "evt_link.json",
            "evt_fifo.json",
            "evt_null.json",
            "evt_sock.json",
            "evt_huge.json",
            "evt_bomb.json",
            "evt_dots.json",
            "\\xFE\\xFF",
            "new\\nline",
        ],
    );
    named(
        "tmpa-archive",
        &[
            "linked.json",
            "fifo.json",
            "chat_history/evil",
            "huge.json",
            "bad\\xFF",
            "bomb.json",
        ],
    );
    named("tmpa-tmpclean", &["fine.json.tmp", "fine.json.tmp.1"]);
    // The data the programs were given survives: the one valid event is compacted, the
    // one valid old session archived.
    let root = Root::open(t.root()).expect("root");
    let read = root.read_day(D1.parse().expect("day")).expect("read");
    assert!(read.events.iter().any(|e| e.id().as_str() == "fine"));
    let u = tmpa_core::UserId::new("u").expect("user");
    assert_eq!(
        root.read_session(&u, &tmpa_core::SessionId::new("fine").expect("id"))
            .expect("fine session"),
        b"{}"
    );
    assert!(
        sessions.join("huge.json").exists(),
        "an oversized session must stay live"
    );
}
