//! What each loose file adds to a day's summary, kept so that it can be taken back out
//! exactly when the file changes: [`Tally`] counts, [`Contrib`] one file's, [`Sums`] the
//! day's, with users and models interned.

use std::collections::{BTreeMap, HashMap};

use crate::names::Day;
use crate::summary::{Summary, Totals};

/// Counts of one set of events, wide enough never to saturate while kept, so that a
/// contribution can be taken back out exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    events: u128,
    prompt: u128,
    completion: u128,
}

impl Tally {
    pub(super) fn add(&mut self, c: &Contrib) {
        self.events += 1;
        self.prompt += u128::from(c.prompt);
        self.completion += u128::from(c.completion);
    }

    pub(super) fn sub(&mut self, c: &Contrib) {
        self.events -= 1;
        self.prompt -= u128::from(c.prompt);
        self.completion -= u128::from(c.completion);
    }

    pub(super) fn of(t: &Totals) -> Tally {
        Tally {
            events: t.events.into(),
            prompt: t.prompt_tokens.into(),
            completion: t.completion_tokens.into(),
        }
    }

    /// As a [`Summary`] counts: each sum saturating at `u64::MAX` (what folding the
    /// events one by one with saturating additions gives).
    pub(super) fn totals(&self) -> Totals {
        let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
        Totals {
            events: clamp(self.events),
            prompt_tokens: clamp(self.prompt),
            completion_tokens: clamp(self.completion),
            total_tokens: clamp(self.prompt + self.completion),
        }
    }
}

/// What one counted event adds: its user and model (interned), its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Contrib {
    pub(super) user: u32,
    pub(super) model: u32,
    pub(super) prompt: u64,
    pub(super) completion: u64,
}

/// User ids and model names, each kept once.
#[derive(Debug, Default)]
pub(super) struct Interned {
    list: Vec<Box<str>>,
    index: HashMap<Box<str>, u32>,
}

impl Interned {
    pub(super) fn get(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.list.len()).expect("fewer than 4G distinct names");
        self.list.push(s.into());
        self.index.insert(s.into(), i);
        i
    }
}

/// The sums of everything counted, overall, per user and per model.
#[derive(Debug, Default)]
pub(super) struct Sums {
    pub(super) all: Tally,
    pub(super) by_user: HashMap<u32, Tally>,
    pub(super) by_model: HashMap<u32, Tally>,
}

impl Sums {
    pub(super) fn add(&mut self, c: &Contrib) {
        self.all.add(c);
        self.by_user.entry(c.user).or_default().add(c);
        self.by_model.entry(c.model).or_default().add(c);
    }

    pub(super) fn sub(&mut self, c: &Contrib) {
        self.all.sub(c);
        for (map, k) in [(&mut self.by_user, c.user), (&mut self.by_model, c.model)] {
            if let Some(t) = map.get_mut(&k) {
                t.sub(c);
                if t.events == 0 {
                    map.remove(&k);
                }
            }
        }
    }

    pub(super) fn summary(&self, day: Day, users: &Interned, models: &Interned) -> Summary {
        let named = |m: &HashMap<u32, Tally>, names: &Interned| -> BTreeMap<String, Totals> {
            m.iter()
                .map(|(k, t)| (names.list[*k as usize].to_string(), t.totals()))
                .collect()
        };
        Summary {
            format: 1,
            day: day.to_string(),
            totals: self.all.totals(),
            by_user: named(&self.by_user, users),
            by_model: named(&self.by_model, models),
            source: String::new(),
        }
    }
}
