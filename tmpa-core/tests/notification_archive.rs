//! Property test of the notification archive format and the library's reads of it:
//! whatever the ids (long, odd characters), bytes and times, an archive read back gives
//! exactly the batch written, and the library reads every archived notification exactly
//! (`read_notification`, `is_acked`, `list_notifications`), with a live copy taking
//! precedence over an archived one.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use proptest::prelude::*;
use tmpa_core::maintenance::{
    ArchivedNotification, Dir, archive_count, archive_name, archive_name_of_index, read_archive,
    write_archive,
};
use tmpa_core::{AtomicFile, NotificationId, NotificationLocation, Root, UserId};

/// An id: short or up to 246 bytes, with spaces, backslashes, newlines, dots, non-ASCII.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}",
        "[a-zA-Z0-9 .\\\\\n\u{e9}\u{4e2d}-]{1,40}",
        "[a-z]{200,240}",
    ]
    .prop_filter("a valid notification id", |s| {
        NotificationId::new(s.as_str()).is_ok()
    })
}

fn batch() -> impl Strategy<Value = Vec<ArchivedNotification>> {
    prop::collection::btree_map(
        id(),
        (
            prop::collection::vec(any::<u8>(), 0..600),
            0i64..4_000_000_000_000_000_000,
            prop::collection::vec(any::<u8>(), 0..60),
            0i64..4_000_000_000_000_000_000,
        ),
        1..12,
    )
    .prop_map(|m: BTreeMap<String, (Vec<u8>, i64, Vec<u8>, i64)>| {
        m.into_iter()
            .map(
                |(id, (body, mtime_ns, ack, acked_ns))| ArchivedNotification {
                    id: NotificationId::new(id).unwrap(),
                    body,
                    mtime_ns,
                    ack,
                    acked_ns,
                },
            )
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Written then read back, an archive is exactly its batch; its name says its count;
    /// the library reads each notification exactly and lists it archived and acked,
    /// unless a live copy exists, which it prefers.
    #[test]
    fn archive_then_read(batch in batch(), level in 0u32..=9, live_first in any::<bool>()) {
        let mut bytes = write_archive(Vec::new(), &batch, level).unwrap();
        let name = archive_name(&batch);
        prop_assert_eq!(archive_count(&name), Some(batch.len() as u64));
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("notifications/u1/archive");
        std::fs::create_dir_all(&archive).unwrap();
        let held = Dir::open_path(&archive).unwrap();
        let mut out = AtomicFile::create_in(&held, OsStr::new(&name)).unwrap();
        std::io::Write::write_all(&mut out, &bytes).unwrap();
        out.commit_new().unwrap();
        let mut read = Vec::new();
        let file = held.open_read(&name).unwrap();
        read_archive(file, &archive.join(&name), |_| true, |n| { read.push(n); true }).unwrap();
        prop_assert_eq!(&read, &batch);
        // The index alone names its archive: what a reader of only the index checks.
        let index = read_archive(held.open_read(&name).unwrap(), &archive, |_| false, |_| false).unwrap();
        prop_assert_eq!(archive_name_of_index(&index), name.clone());

        let root = Root::open(dir.path()).unwrap();
        let u = UserId::new("u1").unwrap();
        let live_id = &batch[0].id;
        if live_first {
            root.deliver(&u, live_id, &serde_json::json!("live")).unwrap();
        }
        for n in &batch {
            let is_live = live_first && n.id == *live_id;
            let want: &[u8] = if is_live { b"\"live\"" } else { &n.body };
            prop_assert_eq!(root.read_notification(&u, &n.id).unwrap(), want);
            prop_assert_eq!(root.is_acked(&u, &n.id).unwrap(), !is_live);
        }
        let listed = root.list_notifications(&u).unwrap();
        prop_assert_eq!(listed.len(), batch.len());
        for (l, n) in listed.iter().zip(&batch) {
            let is_live = live_first && n.id == *live_id;
            prop_assert_eq!(&l.id, &n.id);
            prop_assert_eq!(l.acked, !is_live);
            let location = if is_live { NotificationLocation::Live } else { NotificationLocation::Archived };
            prop_assert_eq!(l.location, location);
        }
        prop_assert!(root.unacked(&u).unwrap().len() == usize::from(live_first));
        // One flipped byte anywhere is never read as a different batch.
        let i = bytes.len() / 2;
        bytes[i] ^= 0x40;
        let torn = dir.path().join("torn.tar.gz");
        std::fs::write(&torn, &bytes).unwrap();
        let mut again = Vec::new();
        let r = read_archive(std::fs::File::open(&torn).unwrap(), &torn, |_| true, |n| { again.push(n); true });
        prop_assert!(r.is_err() || again == batch);
    }
}

/// A digit of a time in index.json changed (no member's checksum covers the times): an
/// archive read whole fails its gzip checksum instead of reading as another batch.
/// Level 0 stores the bytes as they are, so the digit can be found and changed.
#[test]
fn a_changed_time_in_the_index_is_an_error() {
    let batch = vec![ArchivedNotification {
        id: NotificationId::new("n1").unwrap(),
        body: b"{}".to_vec(),
        mtime_ns: 1_700_000_000_123_456_789,
        ack: b"{}".to_vec(),
        acked_ns: 1_700_000_001_000_000_000,
    }];
    let good = write_archive(Vec::new(), &batch, 0).unwrap();
    let at = good
        .windows(9)
        .position(|w| w == b"123456789")
        .expect("the time in the stored index");
    let mut bytes = good.clone();
    bytes[at + 8] = b'8';
    let shown = std::path::Path::new("n.tar.gz");
    let mut read = Vec::new();
    read_archive(
        &good[..],
        shown,
        |_| true,
        |n| {
            read.push(n);
            true
        },
    )
    .unwrap();
    assert_eq!(read, batch);
    let err = read_archive(&bytes[..], shown, |_| true, |_| true).unwrap_err();
    assert!(
        format!("{err}").contains("n.tar.gz"),
        "the error names the archive: {err}"
    );
}
