//! Applying a reviewed plan (`--apply-plan`): [`Applying`] holds the plan's deletions by
//! file; [`Run::admit`](crate::Run::admit) asks it whether a group of files
//! ([`Candidate`]s) takes part, as planned ([`Admission`]) or kept, with the reason
//! ([`Refusal`]); the delete path asks it again before each deletion.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tmpa_core::maintenance::Stamp;

use super::Plan;
use crate::receipt::Deletion;

/// A plan being applied: which planned files were offered for deletion.
#[derive(Debug)]
pub struct Applying {
    /// The plan's digest.
    pub digest: String,
    by_file: BTreeMap<String, Deletion>,
    offered: BTreeSet<String>,
}

/// A file a unit of work would delete, as the run sees it now: what [`Run::admit`]
/// compares with the plan being applied.
///
/// [`Run::admit`]: crate::Run::admit
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The file, as `path_text` writes it.
    pub file: &'a str,
    /// Its identity and times now.
    pub stamp: &'a Stamp,
    /// The SHA-256 of its bytes, once they were read.
    pub sha256: Option<&'a str>,
    /// Where its data would be held, once that is known.
    pub held_by: Option<&'a str>,
}

/// What [`Run::admit`] decided of a group of files.
///
/// [`Run::admit`]: crate::Run::admit
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No plan is applied, or the plan lists every file of the group exactly as it is
    /// now: the group takes part in this run.
    Admitted,
    /// The plan lists none of the group: it is left for the next run.
    NotInPlan,
    /// The plan lists the group, but not as it is now: the whole group is kept, and the
    /// run reports why, naming the file (a [`Refusal`]).
    Refused,
}

/// A group of planned files a run applying the plan keeps: the file that made it so,
/// how many other files of its group are kept with it, and why. The run reports each
/// (`problem:` lines; exit 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// The file (as `path_text` writes it).
    pub file: String,
    /// Other files of its group kept with it.
    pub with: usize,
    /// Why, in words.
    pub why: String,
}

impl Refusal {
    /// The report line's text after the file: why, and what is kept with it.
    pub fn words(&self) -> String {
        match self.with {
            0 => format!("{} (kept; the next run looks again)", self.why),
            1 => format!(
                "{} (kept, with the other file of its group; the next run looks again)",
                self.why
            ),
            n => format!(
                "{} (kept, with the {n} other files of its group; the next run looks again)",
                self.why
            ),
        }
    }
}

impl Applying {
    /// A plan about to be applied.
    pub fn new(plan: Plan) -> Applying {
        Applying {
            digest: plan.digest,
            by_file: plan
                .deletions
                .into_iter()
                .map(|d| (d.file.clone(), d))
                .collect(),
            offered: BTreeSet::new(),
        }
    }

    /// The one plan admission ([`Run::admit`](crate::Run::admit)): whether `group`, files
    /// that go together (a session; a notification and its ack; a batch of them), takes
    /// part in the run. Every planned file of the group is marked as met, kept or not.
    pub(crate) fn admit(&mut self, group: &[Candidate<'_>]) -> (Admission, Vec<Refusal>) {
        let listed: Vec<Option<&Deletion>> =
            group.iter().map(|c| self.by_file.get(c.file)).collect();
        if listed.iter().all(Option::is_none) {
            return (Admission::NotInPlan, Vec::new());
        }
        let others = group.len().saturating_sub(1);
        let mut refusals = Vec::new();
        for (c, p) in group.iter().zip(&listed) {
            let why = match p {
                None => Some("not in the plan, while the rest of its group is".to_owned()),
                Some(p) if p.stamp != *c.stamp || c.sha256.is_some_and(|sha| sha != p.sha256) => {
                    Some("changed since the plan was made".to_owned())
                }
                Some(_) => None,
            };
            if let Some(why) = why {
                refusals.push(Refusal {
                    file: c.file.to_owned(),
                    with: others,
                    why,
                });
            }
        }
        if refusals.is_empty() {
            let moved = group.iter().zip(&listed).find_map(|(c, p)| {
                let (now, planned) = (c.held_by?, &p.as_ref()?.held_by);
                (now != planned).then(|| (now.to_owned(), planned.clone()))
            });
            if let Some((now, planned)) = moved {
                refusals.push(Refusal {
                    file: group[0].file.to_owned(),
                    with: others,
                    why: format!("its data would now be held by {now}, the plan says {planned}"),
                });
            }
        }
        for c in group {
            self.seen(c.file);
        }
        if refusals.is_empty() {
            (Admission::Admitted, refusals)
        } else {
            (Admission::Refused, refusals)
        }
    }

    /// Whether a deletion the run is about to make is the one the plan lists: the same
    /// file with the same stamp, size and SHA-256, its data held at the same place and
    /// verified the same way. `Err` says why not.
    pub(crate) fn check(&mut self, d: &Deletion) -> Result<(), String> {
        let Some(p) = self.by_file.get(&d.file) else {
            return Err("not in the plan (left for the next run)".into());
        };
        self.offered.insert(d.file.clone());
        if p.stamp != d.stamp || p.bytes != d.bytes || p.sha256 != d.sha256 {
            return Err("changed since the plan was made (kept)".into());
        }
        if p.held_by != d.held_by
            || std::mem::discriminant(&p.proof) != std::mem::discriminant(&d.proof)
        {
            return Err(format!(
                "its data would now be held by {}, the plan says {} (kept)",
                d.held_by, p.held_by
            ));
        }
        Ok(())
    }

    /// Marks a planned file as seen by the run (even if it was kept before deletion).
    pub fn seen(&mut self, file: &str) {
        if self.by_file.contains_key(file) {
            self.offered.insert(file.to_owned());
        }
    }

    /// The planned files the run never came to (gone, or no longer a candidate).
    pub fn unseen(&self) -> Vec<&str> {
        self.by_file
            .keys()
            .filter(|f| !self.offered.contains(*f))
            .map(String::as_str)
            .collect()
    }
}
