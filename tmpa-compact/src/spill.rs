//! The spill file: sorted runs of a day's loose events written to disk when the day does
//! not fit the memory budget, read back run by run for the k-way merge.
//!
//! It lives in `{root}/.tmpa/spill/` (the programs' state, on the data's file system, so
//! a full disk shows as what it is) and has no name: it is created with `O_TMPFILE`, the
//! process holds the only reference, so neither an error nor a kill leaves it behind,
//! and the space returns when the run ends however it ends. Where the file system has
//! no unnamed files, it is created with a name and unlinked as soon as it is open; a
//! kill in the instant between the two leaves a `compact_events.*.spill`, which the
//! next run removes ([`sweep_leftovers`]) while it holds the lock no other compaction
//! can hold.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tmpa_core::maintenance::{Dir, Meta, STATE_DIR, root_dir};
use tmpa_core::{Error, Root};

use crate::arena::Arena;
use crate::record::{LooseRec, Spilled, write_spilled};

/// The directory of spill files, below the root.
pub(crate) fn spill_dir_rel() -> PathBuf {
    Path::new(STATE_DIR).join("spill")
}

const PREFIX: &str = "compact_events.";
const SUFFIX: &str = ".spill";

/// Buffer of the writer of a run.
const WRITE_BUF_BYTES: usize = 256 << 10;

/// Leftovers one run removes at most (a kill leaves one; the directory may be the tree
/// owner's, who could fill it with names).
const SWEEP_MAX: usize = 64;

/// Removes the spill files a killed run may have left: regular files of this program's
/// user, at most [`SWEEP_MAX`] per run (names of others are not its leftovers). Only a
/// run holding the compaction lock may call it: no other compaction can be using them.
///
/// # Errors
/// When the directory cannot be listed or a leftover cannot be removed.
pub(crate) fn sweep_leftovers(root: &Root) -> tmpa_core::Result<usize> {
    let dir = match root_dir(root).open_dir(spill_dir_rel()) {
        Ok(d) => d,
        Err(e) if e.io_kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut leftovers = Vec::new();
    dir.visit_entries(|name, _, _| {
        let ours = name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX));
        if ours && leftovers.len() < SWEEP_MAX {
            leftovers.push(name.to_os_string());
        }
    })?;
    let runner = tmpa_maint::runner_uid();
    let mut removed = 0;
    for name in &leftovers {
        if dir
            .stat(name)?
            .is_some_and(|m| m.kind == tmpa_core::maintenance::Kind::File && m.uid == runner)
        {
            #[allow(
                clippy::disallowed_methods,
                reason = "a spill file of an earlier run of this program (its name, our uid), \
                          under the lock: nobody else's data"
            )]
            dir.unlink(name)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where a run is in the spill file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunSpan {
    start: u64,
    len: u64,
}

/// An open, already unlinked spill file and the runs written to it.
#[derive(Debug)]
pub(crate) struct Spill {
    write: File,
    read: File,
    /// The path it had, for messages.
    path: PathBuf,
    len: u64,
    runs: Vec<RunSpan>,
}

impl Spill {
    /// Creates the spill file under `{root}/.tmpa/spill/`: unnamed, or where the file
    /// system cannot, named and unlinked at once.
    ///
    /// # Errors
    /// [`Error::Io`] naming the path.
    pub(crate) fn create(root: &Root) -> tmpa_core::Result<Spill> {
        let dir = root_dir(root).create_dir_all(spill_dir_rel())?;
        if let Some(write) = dir.create_unnamed(0o600)? {
            let read = write
                .try_clone()
                .map_err(|e| dir.error("duplicate descriptor of a spill file in", "", e))?;
            return Ok(Spill {
                write,
                read,
                path: dir.join("(unnamed spill file)"),
                len: 0,
                runs: Vec::new(),
            });
        }
        Spill::create_named(&dir)
    }

    /// The spill file where unnamed files cannot be made: created with a name in `dir`
    /// and unlinked at once.
    fn create_named(dir: &Dir) -> tmpa_core::Result<Spill> {
        let name = unique_name();
        let write = dir.create_new(&name, 0o600)?;
        let opened = Spill::open_and_unlink(dir, &name, write);
        if opened.is_err() {
            #[allow(
                clippy::disallowed_methods,
                reason = "the spill file this run just created O_EXCL; best effort, the next \
                          run's sweep gets it otherwise"
            )]
            let _ = dir.unlink(&name);
        }
        opened
    }

    fn open_and_unlink(dir: &Dir, name: &OsStr, write: File) -> tmpa_core::Result<Spill> {
        let path = dir.join(name);
        let read = dir.open_read(name)?;
        let (w, r) = (Meta::of_fd(&write), Meta::of_fd(&read));
        if !matches!((&w, &r), (Ok(w), Ok(r)) if w.stamp.same_inode(&r.stamp)) {
            return Err(Error::io(
                "open",
                &path,
                io::Error::other("the spill file was replaced while it was being opened"),
            ));
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "the spill file this run created O_EXCL, checked above to be the one open"
        )]
        dir.unlink(name)?;
        Ok(Spill {
            write,
            read,
            path,
            len: 0,
            runs: Vec::new(),
        })
    }

    /// Appends `recs` (sorted) as one run.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spill file (a full disk is `StorageFull`).
    pub(crate) fn write_run(&mut self, recs: &[LooseRec], arena: &Arena) -> tmpa_core::Result<()> {
        let mut run = self.run_writer();
        for r in recs {
            write_spilled(&mut run, r, arena).map_err(|e| run.error(e))?;
        }
        run.finish()
    }

    /// A writer of one more run, which counts once [`RunWriter::finish`]ed.
    pub(crate) fn run_writer(&mut self) -> RunWriter<'_> {
        let Spill {
            write,
            path,
            len,
            runs,
            ..
        } = self;
        RunWriter {
            out: BufWriter::with_capacity(
                WRITE_BUF_BYTES,
                PositionedWriter {
                    file: write,
                    pos: *len,
                },
            ),
            start: *len,
            len,
            runs,
            path,
        }
    }

    /// Number of runs written.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The path it had, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of run `i`, through a buffer of `buf_bytes`.
    pub(crate) fn run(&self, i: usize, buf_bytes: usize) -> BufReader<PositionedReader<'_>> {
        let run = self.runs[i];
        BufReader::with_capacity(
            buf_bytes,
            PositionedReader {
                file: &self.read,
                pos: run.start,
                end: run.start + run.len,
            },
        )
    }

    /// A reader of the records of run `i`, with a buffer of `buf_bytes`.
    pub(crate) fn reader(&self, i: usize, buf_bytes: usize) -> RunReader<'_> {
        RunReader {
            input: self.run(i, buf_bytes),
            path: &self.path,
            head: Spilled::default(),
            live: false,
        }
    }
}

/// One run being appended to a spill file; dropped without [`RunWriter::finish`] (an
/// error), it is not one of the file's runs, and the next one is written over it.
pub(crate) struct RunWriter<'s> {
    out: BufWriter<PositionedWriter<'s>>,
    start: u64,
    len: &'s mut u64,
    runs: &'s mut Vec<RunSpan>,
    path: &'s Path,
}

impl RunWriter<'_> {
    /// An error writing it, naming the spill file.
    pub(crate) fn error(&self, e: io::Error) -> Error {
        Error::io("write", self.path, e)
    }

    /// Writes what is buffered and makes the run one of the file's.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spill file (a full disk is `StorageFull`).
    pub(crate) fn finish(self) -> tmpa_core::Result<()> {
        let path = self.path;
        let end = self
            .out
            .into_inner()
            .map_err(|e| Error::io("write", path, e.into_error()))?
            .pos;
        *self.len = end;
        self.runs.push(RunSpan {
            start: self.start,
            len: end - self.start,
        });
        Ok(())
    }
}

impl io::Write for RunWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One run read back record by record.
#[derive(Debug)]
pub(crate) struct RunReader<'s> {
    input: BufReader<PositionedReader<'s>>,
    path: &'s Path,
    head: Spilled,
    live: bool,
}

impl RunReader<'_> {
    /// Moves to the next record; `false` at the end of the run.
    ///
    /// # Errors
    /// [`Error::Io`] naming the spill file.
    pub(crate) fn advance(&mut self) -> tmpa_core::Result<bool> {
        self.live = self
            .head
            .read_from(&mut self.input)
            .map_err(|e| Error::io("read", self.path, e))?;
        Ok(self.live)
    }

    /// The current record, if the run is not over.
    pub(crate) fn head(&self) -> Option<&Spilled> {
        self.live.then_some(&self.head)
    }
}

/// Writes at its own offset (`pwrite`), whatever else uses the descriptor.
struct PositionedWriter<'f> {
    file: &'f File,
    pos: u64,
}

impl io::Write for PositionedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads `[pos, end)` of a file at its own offset (`pread`), so that several readers
/// share one descriptor.
#[derive(Debug)]
pub(crate) struct PositionedReader<'f> {
    pub(crate) file: &'f File,
    pub(crate) pos: u64,
    pub(crate) end: u64,
}

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn unique_name() -> OsString {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{PREFIX}{}.{nanos:x}{SUFFIX}", std::process::id()).into()
}

#[cfg(test)]
mod tests {
    use tmpa_core::maintenance::Stamp;

    use super::*;
    use crate::record::Instant;

    fn records(arena: &mut Arena, ids: &[&str]) -> Vec<LooseRec> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let json = format!(r#"{{"id":"{id}"}}"#);
                LooseRec {
                    instant: Instant::from((1_700_000_000 + i as i64, 0)),
                    span: arena.push(json.as_bytes(), id.as_bytes()),
                    id_len: u16::try_from(id.len()).expect("short"),
                    ordinal: u32::try_from(i).expect("few"),
                    stamp: Stamp {
                        dev: 1,
                        ino: i as u64,
                        size: json.len() as u64,
                        mtime_ns: 0,
                        ctime_ns: 0,
                    },
                    sha256: [u8::try_from(i).expect("few"); 32],
                }
            })
            .collect()
    }

    fn read_back(spill: &Spill) -> Vec<Vec<String>> {
        (0..spill.runs())
            .map(|i| {
                let mut r = spill.reader(i, 64);
                let mut ids = Vec::new();
                while r.advance().expect("read") {
                    let head = r.head().expect("live");
                    ids.push(String::from_utf8(head.id().to_vec()).expect("utf-8"));
                }
                ids
            })
            .collect()
    }

    /// Both kinds of spill file (unnamed, and named then unlinked where a file system
    /// has no unnamed files) give back the runs written to them and leave no entry in
    /// the directory while they are in use.
    #[test]
    fn both_kinds_of_spill_file_hold_their_runs_and_leave_no_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tmp.path().join("token_stats")).expect("mkdir");
        let root = Root::open(tmp.path()).expect("root");
        let dir = root_dir(&root)
            .create_dir_all(spill_dir_rel())
            .expect("dir");
        let mut arena = Arena::default();
        let first = records(&mut arena, &["a", "b", "c"]);
        let second = records(&mut arena, &["d", "e"]);
        for mut spill in [
            Spill::create(&root).expect("create"),
            Spill::create_named(&dir).expect("create named"),
        ] {
            spill.write_run(&first, &arena).expect("run 1");
            spill.write_run(&second, &arena).expect("run 2");
            assert_eq!(dir.names(|_| true).expect("list"), Vec::<OsString>::new());
            assert_eq!(read_back(&spill), [vec!["a", "b", "c"], vec!["d", "e"]]);
        }
    }
}
