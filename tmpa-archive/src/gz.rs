//! The bytes of sessions: read from their descriptor, through gzip in memory with their
//! SHA-256 and a JSON check on the way, and compared with an archive as streams, without
//! holding a decompressed copy.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::Path;

use flate2::{Compression, GzBuilder};
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};
use tmpa_core::Error;
use tmpa_core::maintenance::{Dir, Kind, Meta, SESSION_BYTES_MAX, Stamp};

/// Chunk size for streaming a session and comparing it with its archive.
pub(crate) const CHUNK_BYTES: usize = 128 * 1024;

/// Opens the file `name` of `dir` to archive it, with the stamp of what was opened (from
/// its descriptor: the file the archive is made of is the one later deletions check).
///
/// # Errors
/// The open or stat error naming the file; [`Error::Corrupt`] when it is not a regular
/// file.
pub(crate) fn open_source(dir: &Dir, name: &str) -> Result<(File, Stamp), Error> {
    let source = dir.open_read(name)?;
    match Meta::of_fd(&source) {
        Ok(m) if m.kind == Kind::File => Ok((source, m.stamp)),
        Ok(_) => Err(Error::Corrupt {
            path: dir.join(name),
            reason: "not a regular file".into(),
        }),
        Err(e) => Err(dir.error("stat", name, e)),
    }
}

/// Whether the open source and its directory entry still match `stamp`.
pub(crate) fn source_unchanged(source: &File, dir: &Dir, name: &str, stamp: &Stamp) -> bool {
    Meta::of_fd(source).is_ok_and(|m| m.stamp == *stamp)
        && dir
            .stat(name)
            .ok()
            .flatten()
            .is_some_and(|m| m.stamp == *stamp)
}

/// The session's bytes through gzip in memory (its name and mtime in the header), with
/// their SHA-256 and whether they are one JSON document.
pub(crate) fn gzip(
    source: &mut File,
    shown: &Path,
    stamp: Stamp,
    level: u32,
) -> tmpa_core::Result<(String, bool, Vec<u8>)> {
    let inner_name = shown
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let gz = GzBuilder::new()
        .filename(inner_name.as_bytes())
        .mtime(u32::try_from((stamp.mtime_ns / 1_000_000_000).max(0)).unwrap_or(0))
        .write(
            Vec::with_capacity(usize::try_from(stamp.size / 4).unwrap_or(0)),
            Compression::new(level),
        );
    let mut tee = Tee::new(&mut *source, gz);
    let valid = json_valid(&mut tee).map_err(|e| Error::io("read", shown, e))?;
    let Tee { hash, out: gz, .. } = tee;
    let bytes = gz.finish().map_err(|e| Error::io("compress", shown, e))?;
    Ok((format!("{:x}", hash.finalize()), valid, bytes))
}

/// Reads the source whole for its SHA-256 and JSON validity (a dry run).
pub(crate) fn hash_and_check(source: &mut File, shown: &Path) -> tmpa_core::Result<(String, bool)> {
    source.rewind().map_err(|e| Error::io("seek", shown, e))?;
    let mut tee = Tee::new(&mut *source, io::sink());
    let valid = json_valid(&mut tee).map_err(|e| Error::io("read", shown, e))?;
    Ok((format!("{:x}", tee.hash.finalize()), valid))
}

/// At most one byte more than a session may hold: a decompression bomb stops there.
pub(crate) fn bounded<R: Read>(r: R) -> io::Take<R> {
    r.take(SESSION_BYTES_MAX + 1)
}

/// Compares two streams byte for byte. An error reading `a` (the archive) is a reason in
/// the inner result; an error reading `b` (the source) is the outer error.
pub(crate) fn same_bytes(a: impl Read, b: impl Read) -> io::Result<Result<bool, String>> {
    let mut a = BufReader::with_capacity(CHUNK_BYTES, a);
    let mut b = BufReader::with_capacity(CHUNK_BYTES, b);
    loop {
        let ab = match io::BufRead::fill_buf(&mut a) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let bb = io::BufRead::fill_buf(&mut b)?;
        if ab.is_empty() || bb.is_empty() {
            return Ok(Ok(ab.is_empty() && bb.is_empty()));
        }
        let n = ab.len().min(bb.len());
        if ab[..n] != bb[..n] {
            return Ok(Ok(false));
        }
        io::BufRead::consume(&mut a, n);
        io::BufRead::consume(&mut b, n);
    }
}

/// Reads the whole of `tee` (so every byte reaches its output and hash) and says whether it
/// was one valid JSON document. Only I/O errors are errors.
pub(crate) fn json_valid<R: Read, W: Write>(tee: &mut Tee<R, W>) -> io::Result<bool> {
    let parsed = {
        let reader = BufReader::with_capacity(CHUNK_BYTES, &mut *tee);
        serde_json::from_reader::<_, IgnoredAny>(reader)
    };
    if let Some(e) = tee.error.take() {
        return Err(e);
    }
    // A parse error stops reading early: the rest must still be archived.
    io::copy(tee, &mut io::sink())?;
    if let Some(e) = tee.error.take() {
        return Err(e);
    }
    Ok(parsed.is_ok())
}

/// A reader that copies everything it reads to `out` and into a SHA-256.
pub(crate) struct Tee<R, W> {
    inner: R,
    out: W,
    hash: Sha256,
    error: Option<io::Error>,
}

impl<R, W> Tee<R, W> {
    pub(crate) fn new(inner: R, out: W) -> Self {
        Tee {
            inner,
            out,
            hash: Sha256::new(),
            error: None,
        }
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|e| {
            self.error = Some(io::Error::new(e.kind(), e.to_string()));
        })?;
        self.hash.update(&buf[..n]);
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let kind = e.kind();
            let msg = e.to_string();
            self.error = Some(e);
            return Err(io::Error::new(kind, msg));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_compares_streams_of_any_chunking() {
        let a = vec![7u8; 300_000];
        let mut b = a.clone();
        assert_eq!(same_bytes(&a[..], &b[..]).unwrap(), Ok(true));
        b[299_999] = 8;
        assert_eq!(same_bytes(&a[..], &b[..]).unwrap(), Ok(false));
        assert_eq!(same_bytes(&a[..10], &a[..11]).unwrap(), Ok(false));
        assert_eq!(same_bytes(&[][..], &[][..]).unwrap(), Ok(true));
    }

    #[test]
    fn tee_passes_every_byte_even_after_a_parse_error() {
        let input = b"{\"a\": [1, 2, oops]} and trailing bytes".to_vec();
        let mut out = Vec::new();
        let mut tee = Tee::new(&input[..], &mut out);
        assert!(!json_valid(&mut tee).unwrap());
        drop(tee);
        assert_eq!(out, input);
        let mut out = Vec::new();
        let mut tee = Tee::new(&b"{\"ok\": true}\n"[..], &mut out);
        assert!(json_valid(&mut tee).unwrap());
    }

    #[test]
    fn json_nesting_bomb_is_invalid_not_a_crash() {
        let bomb = "[".repeat(100_000);
        let mut tee = Tee::new(bomb.as_bytes(), io::sink());
        assert!(!json_valid(&mut tee).unwrap());
    }
}
