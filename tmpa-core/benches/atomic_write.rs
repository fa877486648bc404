//! tmpa-core's atomic write of a 300-byte file against the bare sequence it must cost no
//! more than: open, write, fsync, rename, fsync directory, written directly here.
//! Both run in the same process, on the same file system, interleaved by criterion.

#![allow(
    clippy::disallowed_methods,
    reason = "tests build and break trees by path"
)]
#![allow(missing_docs)]

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

fn bare_write(dest: &Path, tmp: &Path, bytes: &[u8]) {
    let mut f = File::create(tmp).expect("create");
    f.write_all(bytes).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    fs::rename(tmp, dest).expect("rename");
    File::open(dest.parent().expect("parent"))
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

fn bench(c: &mut Criterion) {
    // On the disk under target/, not a tmpfs: fsync must cost what it costs in production.
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let payload = vec![b'x'; 300];
    let mut g = c.benchmark_group("write_300B");
    g.bench_function("bare", |b| {
        let (dest, tmp) = (
            dir.path().join("bare.json"),
            dir.path().join("bare.json.tmp"),
        );
        b.iter(|| bare_write(&dest, &tmp, &payload));
    });
    g.bench_function("tmpa_core", |b| {
        let dest = dir.path().join("core.json");
        b.iter(|| tmpa_core::write(&dest, &payload).expect("write"));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
