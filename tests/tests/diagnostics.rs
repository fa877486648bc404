//! `-v`/`-q`: the diagnostics of the libraries beneath the programs (here the object-store
//! client's retries, which it reports through `tracing`) reach stderr when asked for, and
//! no verbosity removes the program's own log lines.

use std::net::TcpListener;
use std::time::Duration;

use tmpa_tests::{Run, Tree, age, bin};

/// An archive run to an S3 endpoint that refuses every connection: by default and with
/// `-q` the store client's retries stay quiet; with `-v` each retry is on stderr, with its
/// cause; at every level the run's first and last lines are there and it exits 4, the
/// session left in place.
#[test]
fn verbose_shows_the_store_clients_retries() {
    // A port nothing listens on: connections are refused at once.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // The three runs at once, on a tree each (each holds its root's lock): each spends
    // its retries' backoff (seconds) waiting.
    let cases = [(&[][..], false), (&["-v"][..], true), (&["-q"][..], false)];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(flags, shown)| {
            let t = Tree::new();
            let session = t.file("chat_history/u1/sessions/s1.json", br#"{"m":[]}"#);
            age(&session, Duration::from_secs(60 * 86_400));
            t.file(
                "tmpa.toml",
                "[archive]\nurl = \"s3://chat-archive/host-a\"\n",
            );
            let child = bin("tmpa-archive")
                .arg("--root")
                .arg(t.root())
                .args(["--older-than", "30d"])
                .args(flags)
                .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_REGION", "eu-west-1")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run");
            (flags, shown, child, t, session)
        })
        .collect();
    for (flags, retries_shown, child, _tree, session) in runs {
        let r: Run = child.wait_with_output().expect("wait").into();
        assert_eq!(r.code, 4, "{flags:?}: {r:?}");
        let said = format!("{}{}", r.stdout, r.stderr);
        assert!(
            said.contains(" tmpa-archive "),
            "{flags:?}: the first line: {r:?}"
        );
        assert!(said.contains("exit=4"), "{flags:?}: the last line: {r:?}");
        assert_eq!(
            r.stderr.contains("backing off"),
            retries_shown,
            "{flags:?}: the store client's retries:\n{}",
            r.stderr
        );
        assert!(session.exists(), "{flags:?}: left in place");
    }
}
