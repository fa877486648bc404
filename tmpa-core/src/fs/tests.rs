//! Tests of [`Dir`](super::Dir): symlinks refused on the way, names of one component,
//! directories made and reused.

use super::*;

#[test]
fn refuses_symlinks_on_the_way_and_survives_a_swap() {
    let t = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("a/d1")).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("a/d2")).unwrap();
    let top = Dir::open_path(t.path()).unwrap();
    let e = top.open_dir("a/d2").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsafe {
                reason: UnsafeReason::Symlink,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("a/d2"), "{e}");
    let e = top.open_dir("a/../a").unwrap_err();
    assert!(matches!(e, Error::Unsafe { .. }), "{e}");
    let h = top.open_dir("a/d1").unwrap();
    // Swap the directory for a symlink to the outside: the handle still acts inside.
    std::fs::rename(t.path().join("a/d1"), t.path().join("a/moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("a/d1")).unwrap();
    let mut f = AtomicFile::create_in(&h, OsStr::new("x.json")).unwrap();
    std::io::Write::write_all(&mut f, b"{}").unwrap();
    f.commit().unwrap();
    assert!(t.path().join("a/moved/x.json").exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn the_stepwise_walk_refuses_what_openat2_refuses() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("a/b")).unwrap();
    std::fs::write(t.path().join("a/f"), b"x").unwrap();
    std::os::unix::fs::symlink(t.path().join("a/b"), t.path().join("a/l")).unwrap();
    let top = Dir::open_path(t.path()).unwrap();
    assert!(top.open_dir_stepwise(Path::new("a/b")).is_ok());
    let e = top.open_dir_stepwise(Path::new("a/l")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsafe {
                reason: UnsafeReason::Symlink,
                ..
            }
        ),
        "{e}"
    );
    let e = top.open_dir_stepwise(Path::new("a/f/x")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsafe {
                reason: UnsafeReason::NotADirectory,
                ..
            }
        ),
        "{e}"
    );
    let e = top.open_dir_stepwise(Path::new("a/none")).unwrap_err();
    assert_eq!(e.io_kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains("a/none"), "{e}");
}

#[test]
fn names_that_are_not_one_component_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = Dir::open_path(t.path()).unwrap();
    for bad in ["", ".", "..", "a/b"] {
        assert!(d.stat(bad).is_err(), "{bad:?}");
        assert!(d.unlink(bad).is_err(), "{bad:?}");
    }
    assert!(d.stat("fine").unwrap().is_none());
}

#[test]
fn stat_sees_a_symlink_not_its_target() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"abc").unwrap();
    std::os::unix::fs::symlink(t.path().join("f"), t.path().join("l")).unwrap();
    let d = Dir::open_path(t.path()).unwrap();
    let f = d.stat("f").unwrap().unwrap();
    let l = d.stat("l").unwrap().unwrap();
    assert_eq!((f.kind, f.stamp.size), (Kind::File, 3));
    assert_eq!(l.kind, Kind::Symlink);
    assert_ne!(f.stamp, l.stamp);
    let e = d.read("l", 100).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[test]
fn create_dir_all_makes_and_reuses() {
    let t = tempfile::tempdir().unwrap();
    let d = Dir::open_path(t.path()).unwrap();
    let made = d.create_dir_all("x/y/z").unwrap();
    assert_eq!(made.path(), t.path().join("x/y/z"));
    assert!(t.path().join("x/y/z").is_dir());
    assert!(d.create_dir_all("x/y/z").is_ok());
    std::fs::write(t.path().join("x/file"), b"").unwrap();
    assert!(matches!(
        d.create_dir_all("x/file/q").unwrap_err(),
        Error::Unsafe { .. }
    ));
}
