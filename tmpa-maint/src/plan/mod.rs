//! Reviewed plans: `--dry-run --save-plan FILE` writes exactly what a real run would
//! delete; `--apply-plan FILE` deletes that and nothing else.
//!
//! A plan lists, for every file the run would delete, the receipt line the real run would
//! write for it ([`Deletion`]: path, size, SHA-256, stamp, where its data would be held
//! and how that would be verified), with the program, its version, the task and the root.
//! Its digest covers all of that but the time it was made, so two dry runs that would do
//! the same thing have the same digest: every dry run's record keeps it, and its last log
//! line says whether it matches the previous dry run's (and for how many in a row).
//!
//! Applying a plan re-verifies each listed file exactly as a real run does, and deletes it
//! only if it is still the same file (the whole stamp, and its SHA-256) and its data is
//! still held where the plan says; a file not in the plan is left for the next run; a
//! changed file is kept and reported (exit 1). A plan for another program, task or root,
//! of an incompatible version, or torn (not the JSON the digest says) is refused before
//! anything is done (exit 2).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exit::StartError;
use crate::receipt::Deletion;
use crate::record::Task;

mod apply;

pub use apply::{Admission, Applying, Candidate, Refusal};

/// The plan format this version writes (format 1, whose digest sorted the deletions'
/// hashes, is still read).
pub const PLAN_FORMAT: u32 = 2;
/// Largest plan file read (about two million entries).
const PLAN_BYTES_MAX: u64 = 1 << 30;

/// A plan file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Always [`PLAN_FORMAT`].
    pub format: u32,
    /// The program that made it.
    pub program: String,
    /// Its version.
    pub version: String,
    /// Its task.
    pub task: Task,
    /// The canonical root (as `path_text` writes it).
    pub root: String,
    /// When the dry run that made it started (RFC 3339); not part of the digest.
    pub created_at: String,
    /// SHA-256 (hex) of everything above but `version` and `created_at`, and of the
    /// deletions, in the canonical form [`Plan::compute_digest`] defines.
    pub digest: String,
    /// What a real run would delete, sorted by file.
    pub deletions: Vec<Deletion>,
}

/// What the digest covers.
#[derive(Serialize)]
struct Head<'a> {
    format: u32,
    program: &'a str,
    task: Task,
    root: &'a str,
}

/// The SHA-256 of one deletion's compact JSON: what the digest is made of.
pub(crate) fn deletion_hash(d: &Deletion) -> [u8; 32] {
    Sha256::digest(serde_json::to_vec(d).expect("a deletion always serializes")).into()
}

/// The deletions' part of a plan's digest, gathered in constant memory in any order: how
/// many, and the sum of their [`deletion_hash`]es read as 256-bit little-endian numbers,
/// modulo 2^256 (a multiset hash). A dry run of millions of files keeps 40 bytes, not 32
/// a file. It tells apart any two plans that differ by accident (a torn or edited file,
/// a run that would delete something else); it is no defence against file names crafted
/// to collide, which would gain nothing: applying a plan re-verifies every file it lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DeletionSum {
    count: u64,
    sum: [u64; 4],
}

impl DeletionSum {
    /// Adds one deletion.
    pub(crate) fn add(&mut self, d: &Deletion) {
        let h = deletion_hash(d);
        let mut carry = false;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let word = u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let (s, c1) = limb.overflowing_add(word);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *limb = s;
            carry = c1 || c2;
        }
        self.count += 1;
    }

    /// The sum of `deletions`.
    pub(crate) fn of<'a>(deletions: impl IntoIterator<Item = &'a Deletion>) -> DeletionSum {
        let mut s = DeletionSum::default();
        for d in deletions {
            s.add(d);
        }
        s
    }

    fn bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        for (i, limb) in self.sum.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&limb.to_le_bytes());
        }
        b
    }
}

/// The digest of a plan: SHA-256 of the compact JSON of its format, program, task and
/// root, then of its deletions: for format 2, their [`DeletionSum`] (count, then sum,
/// little-endian); for format 1, each deletion's SHA-256, sorted. It does not depend on
/// the order in which the run met the files.
pub(crate) fn digest_of(
    format: u32,
    program: &str,
    task: Task,
    root: &str,
    rest: Rest<'_>,
) -> String {
    let head = Head {
        format,
        program,
        task,
        root,
    };
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&head).expect("a plan head always serializes"));
    match rest {
        Rest::Sum(sum) => h.update(sum.bytes()),
        Rest::Sorted(deletions) => {
            let mut hashes: Vec<[u8; 32]> = deletions.iter().map(deletion_hash).collect();
            hashes.sort_unstable();
            for d in &hashes {
                h.update(d);
            }
        }
    }
    format!("{:x}", h.finalize())
}

/// The deletions as a digest's format covers them.
pub(crate) enum Rest<'a> {
    /// Format 2.
    Sum(DeletionSum),
    /// Format 1 (plans written before the sum).
    Sorted(&'a [Deletion]),
}

impl Plan {
    /// A plan of `deletions` (sorted here), with its digest.
    pub fn new(
        program: &str,
        task: Task,
        root: &str,
        created_at: String,
        mut deletions: Vec<Deletion>,
    ) -> Plan {
        deletions.sort_by(|a, b| a.file.cmp(&b.file));
        let mut p = Plan {
            format: PLAN_FORMAT,
            program: program.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            task,
            root: root.to_owned(),
            created_at,
            digest: String::new(),
            deletions,
        };
        p.digest = p.compute_digest();
        p
    }

    /// The digest of the plan's content, not its version or the time it was made (see
    /// `digest_of`; a dry run that saves no plan computes the same one in 40 bytes).
    pub fn compute_digest(&self) -> String {
        let rest = if self.format == 1 {
            Rest::Sorted(&self.deletions)
        } else {
            Rest::Sum(DeletionSum::of(&self.deletions))
        };
        digest_of(self.format, &self.program, self.task, &self.root, rest)
    }

    /// The digest's first 12 hex digits, for log lines.
    pub fn short_digest(digest: &str) -> &str {
        &digest[..digest.len().min(12)]
    }

    /// The plan as its file holds it (pretty JSON and a newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a plan always serializes");
        v.push(b'\n');
        v
    }

    /// Reads the plan at `path` and checks it may be applied by `program` (of this
    /// version) for `task` on `root`.
    ///
    /// # Errors
    /// [`StartError::Usage`] naming the file and the problem: unreadable, torn (not JSON,
    /// or a digest that does not match its content), of another format, program, task or
    /// root, or of an incompatible version (another major.minor).
    pub fn load(path: &Path, program: &str, task: Task, root: &str) -> Result<Plan, StartError> {
        Plan::check(path, &Plan::read(path)?, program, task, root)
    }

    /// The bytes of the plan file at `path`, bounded: what a program started as root
    /// reads before it becomes `--user` ([`Plan::check`] them then).
    ///
    /// # Errors
    /// [`StartError::Usage`] naming the file: unreadable or too large.
    pub fn read(path: &Path) -> Result<Vec<u8>, StartError> {
        let refuse = |why: String| {
            StartError::Usage(format!("plan {}: {why}; nothing done", path.display()))
        };
        let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
        if meta.len() > PLAN_BYTES_MAX {
            return Err(refuse(format!("larger than {PLAN_BYTES_MAX} bytes")));
        }
        std::fs::read(path).map_err(|e| refuse(format!("cannot read: {e}")))
    }

    /// The plan in `bytes` (read from `path`), if `program` (of this version) may apply it
    /// for `task` on `root`.
    ///
    /// # Errors
    /// As [`Plan::load`].
    pub fn check(
        path: &Path,
        bytes: &[u8],
        program: &str,
        task: Task,
        root: &str,
    ) -> Result<Plan, StartError> {
        let refuse = |why: String| {
            StartError::Usage(format!("plan {}: {why}; nothing done", path.display()))
        };
        let plan: Plan = serde_json::from_slice(bytes)
            .map_err(|e| refuse(format!("not a plan (torn or edited?): {e}")))?;
        if !(1..=PLAN_FORMAT).contains(&plan.format) {
            return Err(refuse(format!(
                "plan format {} (this version reads formats 1 to {PLAN_FORMAT})",
                plan.format
            )));
        }
        if plan.compute_digest() != plan.digest {
            return Err(refuse(
                "its digest does not match its content (torn or edited)".into(),
            ));
        }
        if plan.program != program || plan.task != task {
            return Err(refuse(format!(
                "made by {} for {}, not by {program} for {task}",
                plan.program, plan.task
            )));
        }
        if plan.root != root {
            return Err(refuse(format!("made for root {}, not {root}", plan.root)));
        }
        let ours = env!("CARGO_PKG_VERSION");
        if major_minor(&plan.version) != major_minor(ours) {
            return Err(refuse(format!(
                "made by version {}, incompatible with {ours} (re-plan with a dry run)",
                plan.version
            )));
        }
        Ok(plan)
    }
}

fn major_minor(v: &str) -> Option<(&str, &str)> {
    let mut it = v.split('.');
    Some((it.next()?, it.next()?))
}

/// What a dry run notes of each file a real run would delete: the lines themselves when
/// the plan is saved (`--save-plan`), else only their [`DeletionSum`] (40 bytes, whatever
/// the number of files), which is all its digest needs.
#[derive(Debug)]
pub(crate) enum Noted {
    Lines(Vec<Deletion>),
    Sum(DeletionSum),
}

impl Noted {
    pub(crate) fn push(&mut self, line: Deletion) {
        match self {
            Noted::Lines(lines) => lines.push(line),
            Noted::Sum(sum) => sum.add(&line),
        }
    }
}

/// `--save-plan`'s destination: opened (created if missing, 0600) before the program
/// becomes `--user`, so that it may be a file only root can write; written through that
/// descriptor when the dry run ends. Not atomic: a plan torn by a kill no longer matches
/// its digest, and `--apply-plan` refuses it. A file in a directory that does not exist
/// yet (one the run makes, under `.tmpa/`) is written by its path at the end instead,
/// atomically, by the user the run then is.
#[derive(Debug)]
pub(crate) struct Saving {
    pub(crate) path: PathBuf,
    file: Option<std::fs::File>,
}

impl Saving {
    /// Opens `path` for the plan, without truncating what is there until the plan is
    /// written.
    pub(crate) fn open(path: &Path) -> Result<Saving, StartError> {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path);
        let file = match opened {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StartError::Usage(format!(
                    "--save-plan {}: cannot open it for writing: {e}; nothing done",
                    path.display()
                )));
            }
        };
        Ok(Saving {
            path: path.to_owned(),
            file,
        })
    }

    /// Replaces the file's content with `bytes` and syncs it.
    pub(crate) fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return tmpa_core::write(&self.path, bytes)
                .map_err(|e| std::io::Error::new(e.io_kind(), e.chain()));
        };
        file.set_len(0)?;
        file.write_all_at(bytes, 0)?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use tmpa_core::maintenance::Stamp;

    use super::*;
    use crate::receipt::Proof;

    fn line(file: &str, ino: u64) -> Deletion {
        Deletion {
            file: file.to_owned(),
            bytes: 10,
            sha256: "ab".repeat(32),
            stamp: Stamp {
                dev: 1,
                ino,
                size: 10,
                mtime_ns: 5,
                ctime_ns: 6,
            },
            held_by: "/r/token_stats/2026-11-01/_compacted.json".into(),
            proof: Proof::CompactedEvent {
                day: "2026-11-01".into(),
                held_events: 2,
            },
        }
    }

    fn plan(lines: Vec<Deletion>) -> Plan {
        Plan::new(
            "tmpa-compact",
            Task::CompactEvents,
            "/r",
            "t0".into(),
            lines,
        )
    }

    /// The digest is the content's: not the order the run found the files in, not the
    /// time; a dry run that keeps only hashes computes the same one.
    #[test]
    fn digest_is_the_content_s() {
        let a = plan(vec![line("/r/a", 1), line("/r/b", 2)]);
        let mut b = plan(vec![line("/r/b", 2), line("/r/a", 1)]);
        b.created_at = "t1".into();
        assert_eq!(a.digest, b.compute_digest());
        assert_ne!(a.digest, plan(vec![line("/r/a", 1)]).digest);
        let sum = DeletionSum::of(&[line("/r/b", 2), line("/r/a", 1)]);
        assert_eq!(
            a.digest,
            digest_of(
                PLAN_FORMAT,
                "tmpa-compact",
                Task::CompactEvents,
                "/r",
                Rest::Sum(sum)
            )
        );
    }

    /// A plan is refused, naming why, when torn, edited, or for another program, task
    /// or root; read back as it was written otherwise.
    #[test]
    fn load_refuses_what_may_not_be_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let p = plan(vec![line("/r/a", 1)]);
        std::fs::write(&path, p.to_json()).unwrap();
        let ok = Plan::load(&path, "tmpa-compact", Task::CompactEvents, "/r").unwrap();
        assert_eq!(ok, p);
        let refused =
            |program: &str, task: Task, root: &str| match Plan::load(&path, program, task, root) {
                Err(StartError::Usage(why)) => why,
                other => panic!("{other:?}"),
            };
        assert!(refused("tmpa-archive", Task::ArchiveHistory, "/r").contains("made by"));
        assert!(refused("tmpa-compact", Task::CompactEvents, "/s").contains("root /r"));
        let edited = String::from_utf8(p.to_json())
            .unwrap()
            .replace("\"bytes\": 10", "\"bytes\": 11");
        std::fs::write(&path, edited).unwrap();
        assert!(refused("tmpa-compact", Task::CompactEvents, "/r").contains("digest"));
        std::fs::write(&path, &p.to_json()[..20]).unwrap();
        assert!(refused("tmpa-compact", Task::CompactEvents, "/r").contains("not a plan"));
    }

    /// A plan written before the sum (format 1: the sorted hashes) is still read and its
    /// digest still checked; a format from the future is refused; a file listed twice
    /// has another digest than once (the sum counts, it does not cancel).
    #[test]
    fn format_1_plans_still_load_and_the_sum_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let mut p = plan(vec![line("/r/a", 1), line("/r/b", 2)]);
        let v2 = p.digest.clone();
        p.format = 1;
        p.digest = p.compute_digest();
        assert_ne!(p.digest, v2);
        std::fs::write(&path, p.to_json()).unwrap();
        assert_eq!(
            Plan::load(&path, "tmpa-compact", Task::CompactEvents, "/r").unwrap(),
            p
        );
        p.format = PLAN_FORMAT + 1;
        p.digest = p.compute_digest();
        std::fs::write(&path, p.to_json()).unwrap();
        match Plan::load(&path, "tmpa-compact", Task::CompactEvents, "/r") {
            Err(StartError::Usage(why)) => assert!(why.contains("plan format 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        let a = line("/r/a", 1);
        let b = line("/r/b", 2);
        assert_eq!(DeletionSum::of([&a, &b]), DeletionSum::of([&b, &a]));
        assert_ne!(DeletionSum::of([&a, &a, &b]), DeletionSum::of([&a, &b]));
        assert_ne!(DeletionSum::of([&a, &a]), DeletionSum::of([&b, &b]));
    }

    /// Admission: a group is admitted only when every file is listed unchanged and held
    /// where the plan says; a changed file is named, and what is kept with it counted;
    /// a group the plan does not know is left without a word.
    #[test]
    fn admission_names_the_changed_file_and_keeps_its_group() {
        let mut a = Applying::new(plan(vec![line("/r/a", 1), line("/r/b", 2)]));
        let (sa, sb, sx) = (
            line("/r/a", 1).stamp,
            line("/r/b", 2).stamp,
            line("/r/x", 9).stamp,
        );
        let c = |file, stamp| Candidate {
            file,
            stamp,
            sha256: None,
            held_by: None,
        };
        assert_eq!(a.admit(&[c("/r/x", &sx)]), (Admission::NotInPlan, vec![]));
        assert_eq!(
            a.admit(&[c("/r/a", &sa), c("/r/b", &sb)]).0,
            Admission::Admitted
        );
        let (verdict, why) = a.admit(&[c("/r/a", &sa), c("/r/b", &sa)]);
        assert_eq!(verdict, Admission::Refused);
        assert_eq!(why.len(), 1);
        assert_eq!((why[0].file.as_str(), why[0].with), ("/r/b", 1));
        assert!(
            why[0].words().contains("changed since the plan"),
            "{}",
            why[0].words()
        );
        let sha = "cd".repeat(32);
        let changed = Candidate {
            sha256: Some(&sha),
            ..c("/r/a", &sa)
        };
        assert_eq!(a.admit(&[changed]).0, Admission::Refused);
        let elsewhere = Candidate {
            held_by: Some("/r/other.json"),
            ..c("/r/a", &sa)
        };
        let (verdict, why) = a.admit(&[elsewhere, c("/r/b", &sb)]);
        assert_eq!(verdict, Admission::Refused);
        assert!(why[0].why.contains("/r/other.json"), "{}", why[0].why);
        assert_eq!(a.unseen(), Vec::<&str>::new());
    }

    /// Applying: only the listed file, only unchanged, only held where the plan says;
    /// the files the run never came to are listed.
    #[test]
    fn applying_admits_exactly_the_planned_deletion() {
        let mut a = Applying::new(plan(vec![
            line("/r/a", 1),
            line("/r/b", 2),
            line("/r/c", 3),
        ]));
        assert_eq!(a.check(&line("/r/a", 1)), Ok(()));
        assert!(
            a.check(&line("/r/x", 9))
                .unwrap_err()
                .contains("not in the plan")
        );
        assert!(a.check(&line("/r/b", 7)).unwrap_err().contains("changed"));
        let mut elsewhere = line("/r/c", 3);
        elsewhere.held_by = "/elsewhere".into();
        assert!(
            a.check(&elsewhere)
                .unwrap_err()
                .contains("held by /elsewhere")
        );
        let a2 = Applying::new(plan(vec![line("/r/a", 1), line("/r/z", 4)]));
        assert_eq!(a2.unseen(), ["/r/a", "/r/z"]);
        assert_eq!(a.unseen(), Vec::<&str>::new());
    }
}
