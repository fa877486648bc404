//! A build of the library without the `object-store` feature, on a tree whose
//! `tmpa.toml` names a store: archived sessions (and notifications) there are reported
//! as unreadable with
//! this build (Error::StoreUnsupported naming the file and the store), never as missing.
//! tests/check.sh runs this file on its own (`cargo test -p tmpa-core --test
//! no_store_feature`), where the feature is off; in the workspace's run the feature is on
//! and the file is empty.
#![cfg(not(feature = "object-store"))]

use tmpa_core::{Error, NotificationId, Root, SessionId, SessionLocation, UserId};

/// read_session and list_sessions say that the store cannot be reached by this build;
/// live sessions are still read (a locally archived one is not: the store could hold a
/// newer version of it).
#[test]
fn a_store_without_the_feature_is_an_error_not_a_missing_session() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("chat_history/u1/sessions")).unwrap();
    std::fs::write(dir.path().join("chat_history/u1/sessions/live.json"), b"{}").unwrap();
    std::fs::write(
        dir.path().join("tmpa.toml"),
        "[archive]\nurl = \"s3://chat-archive/host-a\"\n",
    )
    .unwrap();
    let root = Root::open(dir.path()).unwrap();
    let u = UserId::new("u1").unwrap();
    let e = root
        .read_session(&u, &SessionId::new("old").unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::StoreUnsupported { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("tmpa.toml")
            && msg.contains("s3://chat-archive/host-a")
            && msg.contains("object-store"),
        "{msg}"
    );
    assert_eq!(e.io_kind(), std::io::ErrorKind::Unsupported);
    assert!(matches!(
        root.list_sessions(&u).unwrap_err(),
        Error::StoreUnsupported { .. }
    ));
    assert_eq!(
        root.read_session(&u, &SessionId::new("live").unwrap())
            .unwrap(),
        b"{}"
    );
    std::fs::create_dir_all(dir.path().join("chat_history/u1/archive")).unwrap();
    std::fs::write(dir.path().join("chat_history/u1/archive/old.json.gz"), b"").unwrap();
    assert!(matches!(
        root.read_session(&u, &SessionId::new("old").unwrap())
            .unwrap_err(),
        Error::StoreUnsupported { .. }
    ));
    std::fs::remove_file(dir.path().join("tmpa.toml")).unwrap();
    assert_eq!(
        root.list_sessions(&u).unwrap(),
        vec![
            (SessionId::new("live").unwrap(), SessionLocation::Live),
            (SessionId::new("old").unwrap(), SessionLocation::Archived)
        ]
    );
}

/// Notification reads that get past the live files and the local archives say the same:
/// the store cannot be reached by this build. Live notifications, and `unacked` (which
/// never needs an archive), still answer.
#[test]
fn a_store_without_the_feature_is_an_error_not_a_missing_notification() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("notifications")).unwrap();
    std::fs::write(
        root.join("tmpa.toml"),
        "[archive]\nurl = \"s3://chat-archive/host-a\"\n",
    )
    .unwrap();
    let root = Root::open(root).unwrap();
    let u = UserId::new("u1").unwrap();
    let live = NotificationId::new("live").unwrap();
    let old = NotificationId::new("old").unwrap();
    root.deliver(&u, &live, &serde_json::json!({"text": "hi"}))
        .unwrap();
    let unsupported = |e: Error| matches!(e, Error::StoreUnsupported { .. });
    assert!(unsupported(root.read_notification(&u, &old).unwrap_err()));
    assert!(unsupported(root.is_acked(&u, &old).unwrap_err()));
    assert!(unsupported(root.list_notifications(&u).unwrap_err()));
    assert_eq!(
        root.read_notification(&u, &live).unwrap(),
        br#"{"text":"hi"}"#
    );
    assert!(!root.is_acked(&u, &live).unwrap());
    assert_eq!(root.unacked(&u).unwrap(), vec![live]);
}

/// A forget on such a tree fails before it removes anything: the store could hold the
/// user's archives, and a forget that left them would not be one.
#[test]
fn a_store_without_the_feature_stops_a_forget_before_it_removes_anything() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::create(dir.path()).unwrap();
    let (u, s) = (UserId::new("u1").unwrap(), SessionId::new("s").unwrap());
    root.write_session(&u, &s, b"{}").unwrap();
    let n = NotificationId::new("1").unwrap();
    root.deliver_json(&u, &n, b"1").unwrap();
    std::fs::write(
        dir.path().join("tmpa.toml"),
        "[archive]\nurl = \"s3://chat-archive/host-a\"\n",
    )
    .unwrap();
    for e in [
        root.delete_session(&u, &s).unwrap_err(),
        root.delete_notification(&u, &n).unwrap_err(),
        root.forget_user(&u).unwrap_err(),
    ] {
        assert!(matches!(e, Error::StoreUnsupported { .. }), "{e}");
    }
    assert_eq!(root.read_session(&u, &s).unwrap(), b"{}");
    assert_eq!(root.read_notification(&u, &n).unwrap(), b"1");
}
