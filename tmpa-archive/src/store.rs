//! A run's object store ([`StoreRun`]: the client, and whether the store failed) and the
//! budget of archive bytes held in memory at once ([`InFlight`], whatever the tier).
//!
//! A store that fails (unreachable, too slow, answering errors after the retries) trips
//! [`StoreRun::down`]: the sessions and notifications not yet tried are left in place
//! without another request, so a dead store costs one timeout, not one per session.

use std::sync::{Condvar, Mutex, OnceLock};

use tmpa_core::maintenance::store::Store;
use tmpa_core::{Error, StoreErrorKind};

/// Bytes of archives the pipeline's threads may hold in memory at once: each holds an
/// archive's bytes and, while verifying, the copy read back (a session is charged twice
/// its size). A unit larger than this runs by itself, so a run's memory is at most this
/// or twice the largest session (`SESSION_BYTES_MAX`, 256 MiB), plus the client's
/// constant, whatever the number of threads.
pub const IN_FLIGHT_BYTES_MAX: u64 = 128 << 20;

/// What the store's threads hold in memory, bounded by a byte budget.
#[derive(Debug)]
pub struct InFlight {
    budget: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// A share of an [`InFlight`] budget, given back on drop.
#[derive(Debug)]
pub struct Share<'a> {
    of: &'a InFlight,
    bytes: u64,
}

impl InFlight {
    /// A budget of `budget` bytes.
    pub fn new(budget: u64) -> InFlight {
        InFlight {
            budget,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Waits until `bytes` fit beside what the other threads hold (or nothing else is
    /// held: a share larger than the budget runs alone), then takes them.
    pub fn take(&self, bytes: u64) -> Share<'_> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.budget {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += bytes;
        Share { of: self, bytes }
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        *self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut used = self
            .of
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *used -= self.bytes;
        self.of.freed.notify_all();
    }
}

/// A run's store and whether it has failed.
#[derive(Debug)]
pub struct StoreRun {
    /// The client.
    pub store: Store,
    /// Set at the first failure of the store itself (not of one object): why. Every
    /// session after it is left in place untried.
    pub down: OnceLock<String>,
}

impl StoreRun {
    /// A run on `store`, not failed yet.
    pub fn new(store: Store) -> StoreRun {
        StoreRun {
            store,
            down: OnceLock::new(),
        }
    }

    /// Records `e` as the store's failure when it is one (not an object's).
    pub(crate) fn note(&self, e: &Error) {
        if matches!(
            e,
            Error::Store {
                kind: StoreErrorKind::Unavailable | StoreErrorKind::Denied,
                ..
            }
        ) {
            let _ = self.down.set(e.chain());
        }
    }

    /// The words for a session (or a batch of notifications) left untried because the
    /// store is down.
    pub(crate) fn untried(&self) -> Option<String> {
        self.down.get().map(|why| {
            format!(
                "left in place, not tried: the store {} failed earlier in this run ({why})",
                self.store.url()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// Eight threads taking shares never hold more than the budget together, and a share
    /// larger than the budget runs alone.
    #[test]
    fn in_flight_never_exceeds_its_budget() {
        let f = InFlight::new(100);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (f, peak) = (&f, &peak);
                s.spawn(move || {
                    for n in [30, 60, 150, 10] {
                        let share = f.take(n + i);
                        peak.fetch_max(f.used(), Ordering::SeqCst);
                        assert!(f.used() <= 100 || f.used() == n + i, "{}", f.used());
                        std::thread::sleep(Duration::from_millis(2));
                        drop(share);
                    }
                });
            }
        });
        assert_eq!(f.used(), 0);
        assert!(peak.load(Ordering::SeqCst) >= 150);
    }
}
