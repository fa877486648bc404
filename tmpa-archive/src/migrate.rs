//! A local archive as a unit of the pipeline (`--migrate-local`): each version of a
//! session archived in the tree before a store was configured is moved, as it is, to the
//! store's object of the same version, read back and compared, and only then removed
//! locally through the one delete step. An object already there holding the same session
//! (byte for byte, or compressed otherwise) completes an interrupted move; other data is
//! a conflict.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};

use tmpa_core::maintenance::{Dir, SESSION_BYTES_MAX, path_text, sha256_hex};
use tmpa_core::{Error, SessionId, UserId};
use tmpa_maint::Mode;

use crate::gz::{CHUNK_BYTES, Tee, bounded, json_valid, open_source, same_bytes};
use crate::pipeline::{Done, Early, Facts, Member, Opened, Other, Seen, Unit};
use crate::report::{Action, Origin, Report};
use crate::session::{SessionOpen, UserSessions, report_unit};
use crate::tier::{Holds, Tiers};

/// A local archive (`--migrate-local`): moved to the store's object of the same version,
/// as it is.
pub(crate) struct MigrateUnit<'d> {
    pub(crate) ctx: &'d UserSessions<'d>,
    pub(crate) dir: &'d Dir,
    pub(crate) id: SessionId,
    pub(crate) n: u32,
    pub(crate) name: String,
    pub(crate) size: u64,
}

impl<'d> Unit<'d> for MigrateUnit<'d> {
    type Open = SessionOpen;

    fn user(&self) -> &UserId {
        self.ctx.user
    }

    fn source(&self) -> String {
        path_text(&self.dir.join(&self.name))
    }

    fn charge(&self) -> u64 {
        self.size.saturating_mul(2)
    }

    fn open(&self, tiers: &Tiers<'_>, mode: Mode) -> Result<Opened<'d, SessionOpen>, Early> {
        let shown = self.dir.join(&self.name);
        let (mut file, stamp) =
            open_source(self.dir, &self.name).map_err(|e| Early::new(Action::Failed, e.chain()))?;
        let mut bytes = Vec::with_capacity(usize::try_from(stamp.size).unwrap_or(0));
        (&mut file)
            .take(SESSION_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Early::new(Action::Failed, Error::io("read", &shown, e).chain()))?;
        if bytes.len() as u64 != stamp.size {
            return Err(Early::new(
                Action::Changed,
                "changed while being read (kept; retried next run)",
            ));
        }
        let sha = sha256_hex(&bytes);
        let mut dec = bounded(flate2::read::MultiGzDecoder::new(&bytes[..]));
        let mut tee = Tee::new(&mut dec, io::sink());
        let valid = json_valid(&mut tee).map_err(|e| Early {
            action: Action::Corrupt,
            detail: format!("not valid gzip ({e}): kept, not moved"),
            facts: Facts::default(),
        })?;
        let place = self.ctx.place(tiers, &self.id, self.n, true);
        Ok(Opened {
            open: SessionOpen { file, stamp },
            bytes: mode.writes().then_some(bytes),
            existing: Some(place.clone()),
            new: Some(place),
            other: Other::Conflict,
            members: vec![Member {
                dir: self.dir,
                name: self.name.clone(),
                stamp,
                sha256: sha.clone(),
                after: None,
            }],
            mode: 0o600,
            bytes_max: SESSION_BYTES_MAX,
            holds: Holds::Session,
            facts: Facts {
                sha256: Some(sha),
                valid_json: Some(valid),
            },
        })
    }

    fn compare(&self, open: &mut SessionOpen, got: &[u8]) -> tmpa_core::Result<Seen> {
        let shown = self.dir.join(&self.name);
        let rewind = |f: &mut File| f.rewind().map_err(|e| Error::io("seek", &shown, e));
        rewind(&mut open.file)?;
        // Byte for byte (an object this run stored); else the same session compressed
        // otherwise (an object an earlier run stored from the live file) counts too.
        let raw = same_bytes(got, BufReader::with_capacity(CHUNK_BYTES, &mut open.file))
            .map_err(|e| Error::io("read", &shown, e))?;
        if raw == Ok(true) {
            return Ok(Seen::Same);
        }
        rewind(&mut open.file)?;
        let local = bounded(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            CHUNK_BYTES,
            &mut open.file,
        )));
        let same = same_bytes(bounded(flate2::read::MultiGzDecoder::new(got)), local)
            .map_err(|e| Error::io("read", &shown, e))?;
        Ok(match same {
            Ok(true) => Seen::Same,
            Ok(false) => Seen::Other,
            Err(why) => Seen::Foreign(format!("cannot be read back: {why} (both kept)")),
        })
    }
}

impl MigrateUnit<'_> {
    pub(crate) fn report(&self, done: Done, from: Origin, report: &mut Report) {
        let path = self.dir.join(&self.name);
        report_unit(report, self.ctx.user, &self.id, path, self.size, done, from);
    }
}
