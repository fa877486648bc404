//! tmpa-archive and the library against a real S3-compatible server (moto on 127.0.0.1,
//! started by this test process), with a proxy in front of it where a test needs the
//! store to fail: archival with read-back verification, reruns, interrupted runs,
//! conflicts, a store that goes away or is slow, corrupted objects and wrong ETags on
//! read-back, migration of local archives, dry runs that make no request, and the
//! library reading archived sessions from the store.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tmpa_tests::s3::{Fault, FaultProxy, S3Server};
use tmpa_tests::{Run, Tree, age, bin};

const MONTH: Duration = Duration::from_secs(40 * 86_400);
const USER: &str = "alice";

/// The server this test file shares (each test uses its own bucket); `None` when moto
/// is not installed and TMPA_ALLOW_SKIP is set (the tests then say SKIPPED).
fn server() -> Option<&'static S3Server> {
    static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();
    SERVER.get_or_init(S3Server::start).as_ref()
}

fn body(name: &str, n: usize) -> Vec<u8> {
    let msgs: Vec<Value> = (0..n)
        .map(|i| serde_json::json!({"role": "user", "text": format!("message {i} of {name}")}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"session": name, "messages": msgs})).expect("json")
}

/// A tree with `n` old sessions of [`USER`] (s0, s1, ...) and one young one, archiving
/// to `s3://{bucket}/host-a`; returns the tree and the old sessions' bytes.
fn tree(bucket: &str, n: usize) -> (Tree, Vec<(String, Vec<u8>)>) {
    let t = Tree::new();
    let mut old = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        let b = body(&name, 3 + i);
        let p = t.file(format!("chat_history/{USER}/sessions/{name}.json"), &b);
        age(&p, MONTH);
        old.push((name, b));
    }
    t.file(format!("chat_history/{USER}/sessions/young.json"), b"{}");
    config(&t, &format!("s3://{bucket}/host-a"), None);
    (t, old)
}

fn config(t: &Tree, url: &str, timeout_secs: Option<u64>) {
    let extra = timeout_secs.map_or(String::new(), |s| format!("timeout_secs = {s}\n"));
    t.file("tmpa.toml", format!("[archive]\nurl = \"{url}\"\n{extra}"));
}

fn session_path(t: &Tree, name: &str) -> PathBuf {
    t.root()
        .join(format!("chat_history/{USER}/sessions/{name}.json"))
}

/// Runs tmpa-archive on `t` with the store's environment pointing at `port`.
fn archive(t: &Tree, port: u16, args: &[&str]) -> Run {
    let mut cmd = bin("tmpa-archive");
    S3Server::env(&mut cmd, port)
        .arg("--root")
        .arg(t.root())
        .args(args)
        .output()
        .expect("run tmpa-archive")
        .into()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn key(name: &str) -> String {
    format!("host-a/{USER}/{name}.json.gz")
}

fn sha256(bytes: &[u8]) -> String {
    tmpa_core::maintenance::sha256_hex(bytes)
}

/// Every receipt line of the archive runs of `t`.
fn receipts(t: &Tree) -> Vec<Value> {
    tmpa_tests::receipt_lines(t.root(), "archive_history")
}

/// The library, as a backend process with the store's environment: a session's bytes
/// (or the error), and the user's sessions with where they are.
fn library(t: &Tree, port: u16, session: Option<&str>) -> Result<Vec<u8>, String> {
    let mut cmd = bin("tmpa-session");
    S3Server::env(&mut cmd, port).arg(t.root()).arg(USER);
    cmd.args(session);
    let out = cmd.output().expect("run tmpa-session");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Old sessions go to the store: each object decompresses to its session, each receipt
/// line names the object URL, its size, ETag and SHA-256 and the session's SHA-256, each
/// session is deleted; the young one stays. A second run changes nothing.
#[test]
fn archives_to_s3_with_read_back_then_a_rerun_changes_nothing() {
    let Some(s) = server() else { return };
    s.create_bucket("archive-and-rerun");
    let (t, old) = tree("archive-and-rerun", 3);
    let r = archive(&t, s.port(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("store: s3://archive-and-rerun/host-a (conditional put"),
        "{}",
        r.stdout
    );
    let lines = receipts(&t);
    assert_eq!(lines.len(), old.len(), "{lines:?}");
    for (name, b) in &old {
        assert!(!session_path(&t, name).exists(), "{name} not deleted");
        let object = s
            .get_object("archive-and-rerun", &key(name))
            .unwrap_or_else(|| panic!("no object for {name}"));
        assert_eq!(&gunzip(&object), b);
        let url = format!("s3://archive-and-rerun/{}", key(name));
        let line = lines
            .iter()
            .find(|l| l["held_by"] == url)
            .unwrap_or_else(|| panic!("no receipt line for {url}: {lines:?}"));
        assert_eq!(line["verified_by"], "store_read_back");
        assert_eq!(line["sha256"], sha256(b));
        assert_eq!(line["object_sha256"], sha256(&object));
        assert_eq!(line["object_bytes"], object.len() as u64);
        assert!(
            line["etag"].as_str().is_some_and(|e| !e.is_empty()),
            "{line}"
        );
    }
    assert!(session_path(&t, "young").exists());
    let before = t.snapshot();
    let keys = s.keys("archive-and-rerun", "host-a/");
    let again = archive(&t, s.port(), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(t.snapshot(), before, "a rerun changed the tree");
    assert_eq!(s.keys("archive-and-rerun", "host-a/"), keys);
    assert_eq!(receipts(&t).len(), old.len());
}

/// An object that already holds the session's bytes (a run killed between upload and
/// deletion) completes the archival: the session is deleted, the object is not
/// rewritten. An object with other bytes of the session (an earlier version) makes the
/// session the next version, beside it. An object that is not gzip is a conflict: both
/// kept, exit 1, with a remedy that keeps the live session.
#[test]
fn an_equal_object_completes_another_version_follows_and_garbage_conflicts() {
    let Some(s) = server() else { return };
    s.create_bucket("complete-or-conflict");
    let (t, old) = tree("complete-or-conflict", 3);
    let equal = gzip(&old[0].1);
    s.put_object("complete-or-conflict", &key("s0"), &equal);
    let other = gzip(b"{\"earlier\":\"version\"}");
    s.put_object("complete-or-conflict", &key("s1"), &other);
    s.put_object("complete-or-conflict", &key("s2"), b"not gzip at all");
    let r = archive(&t, s.port(), &["--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let report = r.json();
    let session = |name: &str| {
        report["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .find(|x| x["session"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(session("s0")["action"], "complete");
    assert_eq!(session("s1")["action"], "archive");
    assert_eq!(session("s1")["version"], 2);
    assert_eq!(session("s2")["action"], "conflict");
    assert!(
        session("s2")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("the live session is kept")),
        "{report}"
    );
    assert!(!session_path(&t, "s0").exists());
    assert!(!session_path(&t, "s1").exists());
    assert_eq!(fs::read(session_path(&t, "s2")).expect("s2 kept"), old[2].1);
    assert_eq!(
        s.get_object("complete-or-conflict", &key("s0")),
        Some(equal)
    );
    assert_eq!(
        s.get_object("complete-or-conflict", &key("s1")),
        Some(other)
    );
    let v2 = format!("host-a/{USER}/versions/2/s1.json.gz");
    assert_eq!(
        gunzip(
            &s.get_object("complete-or-conflict", &v2)
                .expect("version 2")
        ),
        old[1].1
    );
    assert_eq!(library(&t, s.port(), Some("s1")).expect("newest"), old[1].1);
}

/// Another writer puts an object at the key between this run's HEAD and its put: the
/// conditional put (If-None-Match: *) is refused by the store, so the other object is
/// not replaced; it is compared, found different, and both are kept (exit 1).
#[test]
fn a_conditional_put_never_replaces_an_object_that_appeared_meanwhile() {
    let Some(s) = server() else { return };
    s.create_bucket("raced");
    let (t, old) = tree("raced", 1);
    let proxy = FaultProxy::start(s.port(), Fault::RaceOnPut, || {});
    let r = archive(&t, proxy.port(), &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("appeared while this run was writing it"),
        "{}",
        r.stdout
    );
    assert_eq!(
        s.get_object("raced", &key("s0")).as_deref(),
        Some(tmpa_tests::s3::RACING_BYTES),
        "the other writer's object was replaced"
    );
    assert_eq!(fs::read(session_path(&t, "s0")).expect("kept"), old[0].1);
}

/// On a store without conditional put (here: AWS_CONDITIONAL_PUT=disabled, as for a
/// store that rejects If-None-Match), archival HEADs before each put instead, says so in
/// the report, and still verifies and deletes.
#[test]
fn without_conditional_put_the_run_heads_first_and_says_so() {
    let Some(s) = server() else { return };
    s.create_bucket("no-conditional");
    let (t, old) = tree("no-conditional", 2);
    let mut cmd = bin("tmpa-archive");
    let r: Run = S3Server::env(&mut cmd, s.port())
        .env("AWS_CONDITIONAL_PUT", "disabled")
        .arg("--root")
        .arg(t.root())
        .arg("--json")
        .output()
        .expect("run tmpa-archive")
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.json()["destination"]["put_guard"],
        "head_first",
        "{}",
        r.stdout
    );
    for (name, b) in &old {
        assert!(!session_path(&t, name).exists());
        assert_eq!(
            &gunzip(&s.get_object("no-conditional", &key(name)).expect("object")),
            b
        );
    }
}

/// A server that answers 501 Not Implemented to the conditional put (If-None-Match) is a
/// store without conditional puts, not a store that is down: the run falls back to HEAD
/// before each put, says so, verifies and deletes (exit 0).
#[test]
fn a_store_refusing_if_none_match_gets_head_then_put() {
    let Some(s) = server() else { return };
    s.create_bucket("refuses-inm");
    let (t, old) = tree("refuses-inm", 3);
    let proxy = FaultProxy::start(s.port(), Fault::RefuseIfNoneMatch, || {});
    let r = archive(&t, proxy.port(), &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["destination"]["put_guard"], "head_first", "{doc}");
    for (name, b) in &old {
        assert!(!session_path(&t, name).exists(), "{name} kept");
        assert_eq!(
            &gunzip(&s.get_object("refuses-inm", &key(name)).expect("object")),
            b
        );
    }
}

/// The store goes away in the middle of a run (after a few requests every connection is
/// refused): the run exits 4, every session deleted had its object verified first (and
/// it is in the store), every other session is still there with its bytes; the next
/// run, with the store back, finishes the job.
#[test]
fn the_store_going_away_mid_run_loses_nothing() {
    let Some(s) = server() else { return };
    s.create_bucket("goes-away");
    let (t, old) = tree("goes-away", 12);
    // The probe (1), then HEAD, PUT, GET per session: the store dies during the 4th
    // session's requests at the latest.
    let proxy = FaultProxy::start(s.port(), Fault::DieAfter(10), || {});
    let started = Instant::now();
    let r = archive(&t, proxy.port(), &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "{:?}",
        started.elapsed()
    );
    assert!(r.stdout.contains("left in place"), "{}", r.stdout);
    let mut deleted = 0;
    for (name, b) in &old {
        match fs::read(session_path(&t, name)) {
            Ok(bytes) => assert_eq!(&bytes, b, "{name} changed"),
            Err(_) => {
                deleted += 1;
                let object = s
                    .get_object("goes-away", &key(name))
                    .unwrap_or_else(|| panic!("{name} deleted, but its object is missing"));
                assert_eq!(&gunzip(&object), b);
            }
        }
    }
    assert!(deleted < old.len(), "the store never went away");
    let again = archive(&t, s.port(), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    for (name, b) in &old {
        assert!(!session_path(&t, name).exists());
        let object = s.get_object("goes-away", &key(name)).expect("object");
        assert_eq!(&gunzip(&object), b);
    }
}

/// A store that is not there at all (its server stopped): every session stays, the run
/// exits 4 after one probe, and the report names the store.
#[test]
fn an_unreachable_store_leaves_every_session() {
    let Some(stopped) = S3Server::start() else {
        return;
    };
    let port = stopped.port();
    stopped.stop();
    let (t, old) = tree("nowhere", 3);
    let before = t.snapshot();
    let r = archive(&t, port, &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("s3://nowhere/host-a"), "{}", r.stdout);
    assert_eq!(
        r.stdout.matches("left in place").count(),
        old.len() + 1,
        "{}",
        r.stdout
    );
    assert_eq!(t.snapshot(), before);
}

/// A store slower than `timeout_secs` is given up on after the retries: exit 4, every
/// session in place, in bounded time.
#[test]
fn a_slow_store_times_out_and_leaves_every_session() {
    let Some(s) = server() else { return };
    s.create_bucket("slow-store");
    let (t, _) = tree("slow-store", 3);
    config(&t, "s3://slow-store/host-a", Some(1));
    let proxy = FaultProxy::start(s.port(), Fault::Delay(Duration::from_secs(3)), || {});
    let before = t.snapshot();
    let started = Instant::now();
    let r = archive(&t, proxy.port(), &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(t.snapshot(), before);
    assert!(s.keys("slow-store", "host-a/").is_empty());
}

/// The store hands back other bytes than were stored: verification fails, the session
/// is kept (exit 1) and no receipt names it; once the store reads back right, the next
/// run completes it from the object that is there.
#[test]
fn a_corrupted_object_on_read_back_is_caught() {
    let Some(s) = server() else { return };
    s.create_bucket("corrupt-read");
    let (t, old) = tree("corrupt-read", 2);
    let proxy = FaultProxy::start(s.port(), Fault::CorruptGet, || {});
    let r = archive(&t, proxy.port(), &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stdout
            .lines()
            .filter(|l| l.starts_with("verification failed "))
            .count(),
        old.len(),
        "{}",
        r.stdout
    );
    for (name, b) in &old {
        assert_eq!(&fs::read(session_path(&t, name)).expect("kept"), b);
    }
    assert!(receipts(&t).is_empty());
    let again = archive(&t, s.port(), &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("completed"), "{}", again.stdout);
    assert!(!session_path(&t, "s0").exists());
}

/// The store reads an object back with another ETag than its put answered: not the
/// object this run stored, so verification fails and the session is kept.
#[test]
fn a_wrong_etag_on_read_back_is_caught() {
    let Some(s) = server() else { return };
    s.create_bucket("wrong-etag");
    let (t, old) = tree("wrong-etag", 1);
    let proxy = FaultProxy::start(s.port(), Fault::WrongEtagOnGet, || {});
    let r = archive(&t, proxy.port(), &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains("verification failed") && r.stdout.contains("ETag"),
        "{}",
        r.stdout
    );
    assert_eq!(fs::read(session_path(&t, "s0")).expect("kept"), old[0].1);
    assert!(receipts(&t).is_empty());
}

/// --dry-run lists what would be uploaded; it reads the store (the versions there
/// decide what a real run would do) and writes nothing to it.
#[test]
fn a_dry_run_reads_the_store_and_writes_nothing() {
    let Some(s) = server() else { return };
    s.create_bucket("dry-only");
    let (t, old) = tree("dry-only", 2);
    let proxy = FaultProxy::start(s.port(), Fault::None, || {});
    let before = t.snapshot();
    let r = archive(&t, proxy.port(), &["--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    let writes = proxy.writes();
    assert!(
        writes.is_empty(),
        "a dry run wrote to the store: {writes:?}"
    );
    assert!(s.keys("dry-only", "").is_empty());
    assert_eq!(t.snapshot(), before);
    for (name, _) in &old {
        assert!(
            r.stdout.contains(&format!(
                "would archive {}",
                session_path(&t, name).display()
            )) && r.stdout.contains(&format!("s3://dry-only/{}", key(name))),
            "{}",
            r.stdout
        );
    }
}

/// A chat resumed after its archival to S3, three times over: every run exits 0 and
/// puts a new version beside the old ones (`versions/{n}/`), none ever overwritten; the
/// library, as a backend, reads the live session while there is one and the newest
/// version after, lists it once as stored, and every version reads back.
#[test]
fn a_chat_resumed_after_archival_to_s3_three_times_over() {
    let Some(s) = server() else { return };
    s.create_bucket("resumed");
    let t = Tree::new();
    config(&t, "s3://resumed/host-a", None);
    let mut versions: Vec<Vec<u8>> = Vec::new();
    for round in 0..4 {
        let b = body("chat", 3 + 2 * round);
        let p = t.file(format!("chat_history/{USER}/sessions/chat.json"), &b);
        age(&p, MONTH);
        assert_eq!(library(&t, s.port(), Some("chat")).expect("live"), b);
        versions.push(b.clone());
        let r = archive(&t, s.port(), &[]);
        assert_eq!(r.code, 0, "round {round}: {r:?}");
        assert!(!p.exists());
        assert_eq!(library(&t, s.port(), Some("chat")).expect("newest"), b);
        let listed = String::from_utf8(library(&t, s.port(), None).expect("list")).expect("utf-8");
        assert_eq!(
            listed.lines().filter(|l| l.contains("chat")).count(),
            1,
            "{listed}"
        );
        assert!(listed.contains("stored"), "{listed}");
        for (i, v) in versions.iter().enumerate() {
            let k = match i {
                0 => key("chat"),
                _ => format!("host-a/{USER}/versions/{}/chat.json.gz", i + 1),
            };
            assert_eq!(&gunzip(&s.get_object("resumed", &k).expect(&k)), v, "{k}");
        }
        assert_eq!(archive(&t, s.port(), &[]).code, 0);
    }
}

/// Taking back an object this run put (its session changed before it could be
/// deleted: the session stays, newer) deletes that very object only: the DELETE is
/// conditional (`If-Match` on the ETag the put answered), so another writer's object
/// that took the key in the instant before it stays (the store refuses with 412).
#[test]
fn taking_back_an_object_never_deletes_another_writers() {
    let Some(s) = server() else { return };
    for (bucket, replace) in [("taken-back", false), ("replaced-meanwhile", true)] {
        s.create_bucket(bucket);
        let (t, _) = tree(bucket, 1);
        let live = session_path(&t, "s0");
        let newer = body("s0", 9);
        let (path, bytes) = (live.clone(), newer.clone());
        // The session is written again while its object is read back: the run keeps it
        // and takes the object back.
        let proxy = FaultProxy::start(s.port(), Fault::TakeBackRace { replace }, move || {
            let tmp = path.with_extension("json.tmp.x");
            fs::write(&tmp, &bytes).expect("write");
            age(&tmp, MONTH);
            fs::rename(&tmp, &path).expect("rename");
        });
        let r = archive(&t, proxy.port(), &["--json"]);
        assert_eq!(r.code, 0, "{bucket}: {r:?}");
        assert_eq!(fs::read(&live).expect("kept"), newer, "{bucket}");
        let report = r.json();
        assert_eq!(report["sessions"][0]["action"], "changed", "{report}");
        let deletes: Vec<String> = proxy
            .log()
            .into_iter()
            .filter(|l| l.starts_with("DELETE "))
            .collect();
        assert_eq!(deletes.len(), 1, "{bucket}: {:?}", proxy.log());
        assert!(deletes[0].contains("if-match"), "{}", deletes[0]);
        if replace {
            assert_eq!(
                s.get_object(bucket, &key("s0")).as_deref(),
                Some(tmpa_tests::s3::RACING_BYTES),
                "the other writer's object was deleted"
            );
            assert_eq!(report["counts"]["taken_back"], 0, "{report}");
            assert!(
                report["sessions"][0]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("another object has its key")),
                "{report}"
            );
        } else {
            assert_eq!(s.get_object(bucket, &key("s0")), None, "not taken back");
            assert_eq!(report["counts"]["taken_back"], 1, "{report}");
        }
    }
}

/// --migrate-local moves local archives (made by an earlier local archival) to the
/// store byte for byte, then removes them; sessions live meanwhile are archived too.
#[test]
fn migrate_local_moves_local_archives() {
    let Some(s) = server() else { return };
    s.create_bucket("migrate");
    let (t, old) = tree("migrate", 3);
    fs::remove_file(t.root().join("tmpa.toml")).expect("rm tmpa.toml");
    let local = archive(&t, s.port(), &[]);
    assert_eq!(local.code, 0, "{local:?}");
    let archive_dir = t.root().join(format!("chat_history/{USER}/archive"));
    let gz: Vec<Vec<u8>> = old
        .iter()
        .map(|(n, _)| fs::read(archive_dir.join(format!("{n}.json.gz"))).expect("local archive"))
        .collect();
    let late = t.file(
        format!("chat_history/{USER}/sessions/late.json"),
        b"{\"late\":1}",
    );
    age(&late, MONTH);
    config(&t, "s3://migrate/host-a", None);
    let r = archive(&t, s.port(), &["--migrate-local"]);
    assert_eq!(r.code, 0, "{r:?}");
    for ((name, b), gz) in old.iter().zip(&gz) {
        assert!(!archive_dir.join(format!("{name}.json.gz")).exists());
        assert_eq!(s.get_object("migrate", &key(name)).as_ref(), Some(gz));
        assert_eq!(library(&t, s.port(), Some(name)).expect("read"), *b);
    }
    assert_eq!(
        gunzip(&s.get_object("migrate", &key("late")).expect("late")),
        b"{\"late\":1}"
    );
    let moved: Vec<Value> = receipts(&t)
        .into_iter()
        .filter(|l| l["file"].as_str().is_some_and(|f| f.ends_with(".json.gz")))
        .collect();
    assert_eq!(moved.len(), old.len(), "{moved:?}");
    let again = archive(&t, s.port(), &["--migrate-local"]);
    assert_eq!(again.code, 0, "{again:?}");
}

/// The library (as a backend process) reads archived sessions from the store and lists
/// them as stored, next to the live ones; a session in none of the places is not found.
#[test]
fn the_library_reads_sessions_from_the_store() {
    let Some(s) = server() else { return };
    s.create_bucket("library-reads");
    let (t, old) = tree("library-reads", 2);
    let r = archive(&t, s.port(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    for (name, b) in &old {
        assert_eq!(library(&t, s.port(), Some(name)).expect("read"), *b);
    }
    let list = String::from_utf8(library(&t, s.port(), None).expect("list")).expect("utf-8");
    assert_eq!(list, "s0 stored\ns1 stored\nyoung live\n");
    let missing = library(&t, s.port(), Some("nope")).unwrap_err();
    assert!(missing.contains("No such file"), "{missing}");
}

/// Runs tmpa-patrol --json on `t` with the store's environment pointing at `port`; the
/// archive_history_last_success check.
fn patrol_archive_check(t: &Tree, port: u16, args: &[&str]) -> Value {
    let mut cmd = bin("tmpa-patrol");
    let r: Run = S3Server::env(&mut cmd, port)
        .arg("--root")
        .arg(t.root())
        .arg("--json")
        .args(args)
        .output()
        .expect("run tmpa-patrol")
        .into();
    r.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "archive_history_last_success")
        .cloned()
        .expect("archive check")
}

/// The patrol names the store archival goes to; it asks the store only with
/// --check-archive-store (one request), and a store that does not answer is critical.
#[test]
fn the_patrol_names_the_store_and_probes_it_on_request() {
    let Some(s) = server() else { return };
    s.create_bucket("patrolled");
    let (t, _) = tree("patrolled", 1);
    assert_eq!(archive(&t, s.port(), &[]).code, 0);
    let proxy = FaultProxy::start(s.port(), Fault::None, || {});
    let quiet = patrol_archive_check(&t, proxy.port(), &[]);
    assert_eq!(proxy.requests(), 0, "the patrol asked the store unasked");
    assert_eq!(quiet["status"], "ok", "{quiet}");
    assert!(
        quiet["detail"]
            .as_str()
            .is_some_and(|d| d.contains("archives to s3://patrolled/host-a")),
        "{quiet}"
    );
    let probed = patrol_archive_check(&t, proxy.port(), &["--check-archive-store"]);
    assert_eq!(proxy.requests(), 1, "one cheap request");
    assert_eq!(probed["status"], "ok", "{probed}");
    assert!(
        probed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("reachable")),
        "{probed}"
    );
    drop(proxy);
    let closed = tmpa_tests::s3::free_port();
    let down = patrol_archive_check(&t, closed, &["--check-archive-store"]);
    assert_eq!(down["status"], "critical", "{down}");
    assert!(
        down["detail"]
            .as_str()
            .is_some_and(|d| d.contains("cannot be reached")),
        "{down}"
    );
}
