//! The archive tier without any server: a `file://` store, `--to`, configuration errors,
//! and the library reading from the store in this very process.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tmpa_core::{Root, SessionId, SessionLocation, UserId};
use tmpa_tests::{Tree, age};

const MONTH: Duration = Duration::from_secs(40 * 86_400);

fn session(t: &Tree, user: &str, name: &str, body: &[u8]) -> PathBuf {
    let p = t.file(format!("chat_history/{user}/sessions/{name}.json"), body);
    age(&p, MONTH);
    p
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(path).expect("object"))
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Sessions go to a directory store: objects `{dir}/{user}/{session}.json.gz`, sessions
/// deleted after read-back; the library reads and lists them from there; a rerun
/// changes nothing.
#[test]
fn archives_to_a_file_store_and_the_library_reads_it_back() {
    let t = Tree::new();
    let store = tempfile::tempdir().expect("store dir");
    let a = session(&t, "u1", "s1", b"{\"a\":1}");
    let b = session(&t, "u 2", "s.2", b"not json");
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"{}\"\n", url(store.path())),
    );
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 1, "invalid JSON is archived and reported: {r:?}");
    assert!(!a.exists() && !b.exists());
    assert_eq!(gunzip(&store.path().join("u1/s1.json.gz")), b"{\"a\":1}");
    assert_eq!(gunzip(&store.path().join("u 2/s.2.json.gz")), b"not json");
    let root = Root::open(t.root()).expect("root");
    let u1 = UserId::new("u1").expect("user");
    let s1 = SessionId::new("s1").expect("session");
    assert_eq!(root.read_session(&u1, &s1).expect("read"), b"{\"a\":1}");
    assert_eq!(
        root.list_sessions(&u1).expect("list"),
        vec![(s1, SessionLocation::Stored)]
    );
    let before = t.snapshot();
    let again = t.run("tmpa-archive", &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(t.snapshot(), before);
}

/// A backend that calls the library from inside its own tokio runtime still reads from
/// the store: the library never blocks on a runtime inside another (that would panic).
#[test]
fn the_library_reads_the_store_from_inside_a_callers_runtime() {
    let t = Tree::new();
    let store = tempfile::tempdir().expect("store dir");
    session(&t, "u1", "s1", b"{\"in\":\"runtime\"}");
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"{}\"\n", url(store.path())),
    );
    assert_eq!(t.run("tmpa-archive", &[]).code, 0);
    let root = Root::open(t.root()).expect("root");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let got = rt.block_on(async {
        root.read_session(
            &UserId::new("u1").expect("user"),
            &SessionId::new("s1").expect("session"),
        )
    });
    assert_eq!(got.expect("read inside a runtime"), b"{\"in\":\"runtime\"}");
}

/// `--to` other than the store the library reads (tmpa.toml) is for trying a store: a
/// run that would delete is refused (exit 2, nothing written), since the backend could not
/// read what it archived; `--dry-run` and `--no-delete` (which delete nothing) go there;
/// `--to` naming the configured store is a real run like any other.
#[test]
fn to_elsewhere_than_the_library_reads_deletes_nothing() {
    let t = Tree::new();
    let configured = tempfile::tempdir().expect("dir");
    let other = tempfile::tempdir().expect("dir");
    let s = session(&t, "u1", "s1", b"{}");
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"{}\"\n", url(configured.path())),
    );
    let r = t.run("tmpa-archive", &["--to", &url(other.path())]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&url(other.path()))
            && r.stderr.contains(&url(configured.path()))
            && r.stderr.contains("--no-delete"),
        "{}",
        r.stderr
    );
    assert!(s.exists());
    assert_eq!(fs::read_dir(other.path()).expect("ls").count(), 0);
    tmpa_tests::only_a_usage_error_record(t.root(), "archive_history");
    let r = t.run("tmpa-archive", &["--to", &url(other.path()), "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fs::read_dir(other.path()).expect("ls").count(), 0);
    let r = t.run("tmpa-archive", &["--to", &url(other.path()), "--no-delete"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(other.path().join("u1/s1.json.gz").exists());
    assert!(
        s.exists(),
        "--no-delete keeps the session, where the library reads it"
    );
    assert_eq!(fs::read_dir(configured.path()).expect("ls").count(), 0);
    let r = t.run("tmpa-archive", &["--to", &url(configured.path())]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!s.exists());
    let root = Root::open(t.root()).expect("root");
    let u1 = UserId::new("u1").expect("user");
    let s1 = SessionId::new("s1").expect("session");
    assert_eq!(root.read_session(&u1, &s1).expect("read"), b"{}");
    // Without tmpa.toml the library reads the local archives: a store is for trying only.
    let t = Tree::new();
    let s = session(&t, "u1", "s1", b"{}");
    let r = t.run("tmpa-archive", &["--to", &url(other.path())]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("the local archive/ directories"),
        "{}",
        r.stderr
    );
    assert!(s.exists());
}

/// A tmpa.toml or URL that cannot be used is a usage error (exit 2) naming the file and
/// the problem, before anything but the run record is written; so is --migrate-local
/// without a store.
#[test]
fn bad_configuration_is_a_usage_error_naming_the_file() {
    for (toml, why) in [
        ("[archive]\nurl = \"ftp://host/x\"\n", "unsupported scheme"),
        ("[archive]\nurl = s3://unquoted\n", "line 2"),
        ("[archive]\nulr = \"s3://b\"\n", "ulr"),
        ("[archive]\nurl = \"s3://b/../x\"\n", "'..'"),
    ] {
        let t = Tree::new();
        let s = session(&t, "u1", "s1", b"{}");
        t.file("tmpa.toml", toml);
        let r = t.run("tmpa-archive", &[]);
        assert_eq!(r.code, 2, "{toml}: {r:?}");
        let shown = t.root().join("tmpa.toml");
        assert!(
            r.stderr.contains(&shown.display().to_string()) && r.stderr.contains(why),
            "{toml}: {}",
            r.stderr
        );
        assert!(s.exists());
        tmpa_tests::only_a_usage_error_record(t.root(), "archive_history");
    }
    let t = Tree::new();
    let r = t.run("tmpa-archive", &["--migrate-local"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--migrate-local"), "{}", r.stderr);
    let r = t.run("tmpa-archive", &["--to", "gopher://x"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("unsupported scheme"), "{}", r.stderr);
}

/// A store directory that does not exist (an unmounted disk, a typo) is an unreachable
/// store: every session stays, exit 4.
#[test]
fn a_missing_store_directory_leaves_every_session() {
    let t = Tree::new();
    let s = session(&t, "u1", "s1", b"{}");
    let gone = tempfile::tempdir().expect("dir").path().join("missing");
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"{}\"\n", url(&gone)),
    );
    let r = t.run("tmpa-archive", &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.contains("is not a directory"), "{}", r.stdout);
    assert!(s.exists());
}

/// The library reports a store it cannot use, never "no such session": a bad tmpa.toml
/// is a configuration error naming the file.
#[test]
fn the_library_names_a_bad_configuration() {
    let t = Tree::new();
    t.file("tmpa.toml", "[archive]\nurl = 3\n");
    let root = Root::open(t.root()).expect("root");
    let e = root
        .read_session(
            &UserId::new("u1").expect("user"),
            &SessionId::new("s1").expect("session"),
        )
        .unwrap_err();
    assert!(matches!(e, tmpa_core::Error::Config { .. }), "{e}");
    assert!(e.to_string().contains("tmpa.toml"), "{e}");
    // A live session is found without reading the configuration at all.
    t.file("chat_history/u1/sessions/s2.json", b"{}");
    assert_eq!(
        root.read_session(
            &UserId::new("u1").expect("user"),
            &SessionId::new("s2").expect("session")
        )
        .expect("live"),
        b"{}"
    );
}

/// The patrol's archive check names where archives go, and warns about a tmpa.toml the
/// next archival would refuse.
#[test]
fn the_patrol_names_the_archive_destination() {
    let t = Tree::new();
    let store = tempfile::tempdir().expect("dir");
    let detail = |t: &Tree| {
        let r = t.run("tmpa-patrol", &["--json", "--check-archive-store"]);
        r.json()["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == "archive_history_last_success")
            .cloned()
            .expect("check")
    };
    let local = detail(&t);
    assert!(
        local["detail"]
            .as_str()
            .is_some_and(|d| d.contains("local archive/ directories")),
        "{local}"
    );
    t.file(
        "tmpa.toml",
        format!("[archive]\nurl = \"{}\"\n", url(store.path())),
    );
    let c = detail(&t);
    assert!(
        c["detail"].as_str().is_some_and(|d| d
            .contains(&format!("archives to {}", url(store.path())))
            && d.contains("reachable")),
        "{c}"
    );
    t.file("tmpa.toml", "[archive]\nurl = \"nope\"\n");
    let bad = detail(&t);
    assert!(
        bad["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tmpa.toml") && d.contains("not a URL")),
        "{bad}"
    );
}
