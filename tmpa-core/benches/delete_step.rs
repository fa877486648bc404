//! The price of the delete step (`dispose`: check, move into the quarantine, check the
//! moved inode, unlink) against what it replaced (check by name, unlink by name), per
//! file of a few hundred bytes, on the disk under target/, cache warm; both in the same
//! process, interleaved by criterion. Directory syncs are per batch in both, so not here.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
#![allow(missing_docs)]

use std::ffi::OsString;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tmpa_core::maintenance::{Dir, Expected, Stamp, dispose};

fn new_files(dir: &Dir, path: &Path, n: usize, seq: &mut u64) -> Vec<(OsString, Stamp)> {
    (0..n)
        .map(|_| {
            *seq += 1;
            let name = OsString::from(format!("evt_{seq}.json"));
            std::fs::write(path.join(&name), [b'x'; 300]).expect("write");
            let stamp = dir.stat(&name).expect("stat").expect("exists").stamp;
            (name, stamp)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let t = tempfile::tempdir_in(base).expect("tempdir");
    std::fs::create_dir_all(t.path().join("day")).expect("mkdir");
    std::fs::create_dir_all(t.path().join("quarantine")).expect("mkdir");
    let top = Dir::open_path(t.path()).expect("open");
    let day = top.open_dir("day").expect("day");
    let aside = top.open_dir("quarantine").expect("quarantine");
    let day_path = t.path().join("day");
    let mut seq = 0;
    let mut g = c.benchmark_group("delete_300B");
    g.bench_function("stat_unlink", |b| {
        b.iter_batched(
            || new_files(&day, &day_path, 1, &mut seq).remove(0),
            |(name, stamp)| {
                let m = day.stat(&name).expect("stat").expect("exists");
                assert_eq!(m.stamp, stamp);
                day.unlink(&name).expect("unlink");
            },
            BatchSize::SmallInput,
        );
    });
    g.bench_function("dispose", |b| {
        b.iter_batched(
            || new_files(&day, &day_path, 1, &mut seq).remove(0),
            |(name, stamp)| {
                let expected = Expected { stamp, lease: None };
                let r = dispose(&day, &name, &aside, &name, &expected, || None);
                assert!(matches!(r, tmpa_core::maintenance::Disposal::Deleted));
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
