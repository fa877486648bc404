//! `--pace`: how a maintenance run leaves a live service room on the same disk. Every
//! paced site (reading loose files, writing `_compacted.json`, deleting) works in steps
//! and calls [`Pacer::pause`] after each: a pause of at least the step's share of
//! `--pace`, and long enough that the run's own work since its last pause takes at most
//! one part in [`BUSY_SHARE`] of the time. A disk slowed by the service (or by other
//! guests of a shared host) makes each step take longer and so each pause longer: the
//! run yields more exactly when the service needs it. Measured beside a writer
//! (docs/PERFORMANCE.md, "Latency").

use std::time::{Duration, Instant};

/// The run works at most one part in this many of its paced time (a sixth); the rest
/// it pauses.
pub const BUSY_SHARE: u32 = 6;

/// The longest pause, as a multiple of `--pace`: a step that took long because the
/// process was stopped or the machine suspended is not made up for by an hour's pause.
const PAUSE_MAX_FACTOR: u32 = 16;

/// One paced site's clock: the time since its last pause is the work it paces.
#[derive(Debug)]
pub struct Pacer {
    pace: Duration,
    since: Instant,
}

impl Pacer {
    /// A pacer for `--pace` (zero: full speed, [`Pacer::pause`] never sleeps). Its work
    /// starts now.
    #[must_use]
    pub fn new(pace: Duration) -> Self {
        Self {
            pace,
            since: Instant::now(),
        }
    }

    /// Whether the run is paced (`--pace` not zero).
    #[must_use]
    pub fn is_paced(&self) -> bool {
        !self.pace.is_zero()
    }

    /// After a step of work: pauses for `--pace` divided by `per` (a site whose steps
    /// are smaller than [`PACE_BATCH`](crate::PACE_BATCH) files pauses for its share), or
    /// longer, so that the work since the last pause was at most a [`BUSY_SHARE`]th of
    /// the time, up to sixteen times `--pace`. Nothing when not paced.
    pub fn pause(&mut self, per: u32) {
        if let Some(d) = self.pause_after(self.since.elapsed(), per) {
            std::thread::sleep(d);
        }
        self.since = Instant::now();
    }

    /// The pause after a step that took `worked`, if paced.
    fn pause_after(&self, worked: Duration, per: u32) -> Option<Duration> {
        if !self.is_paced() {
            return None;
        }
        let fair = worked.saturating_mul(BUSY_SHARE - 1);
        Some(
            (self.pace / per.max(1))
                .max(fair)
                .min(self.pace.saturating_mul(PAUSE_MAX_FACTOR)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_run_at_full_speed_never_pauses() {
        let p = Pacer::new(Duration::ZERO);
        assert!(!p.is_paced());
        assert_eq!(p.pause_after(1000 * MS, 1), None);
    }

    #[test]
    fn a_quick_step_pauses_for_its_share_of_the_pace() {
        let p = Pacer::new(20 * MS);
        assert_eq!(p.pause_after(MS, 1), Some(20 * MS));
        assert_eq!(p.pause_after(Duration::ZERO, 16), Some(20 * MS / 16));
    }

    #[test]
    fn a_slow_step_pauses_so_that_work_is_a_sixth_of_the_time() {
        let p = Pacer::new(20 * MS);
        // 50 ms of work, 250 ms of pause: a sixth busy.
        assert_eq!(p.pause_after(50 * MS, 1), Some(250 * MS));
        assert_eq!(p.pause_after(10 * MS, 16), Some(50 * MS));
    }

    #[test]
    fn a_pause_is_at_most_sixteen_times_the_pace() {
        let p = Pacer::new(20 * MS);
        assert_eq!(p.pause_after(3600 * 1000 * MS, 1), Some(320 * MS));
    }
}
