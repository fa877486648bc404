//! The archive tier, for `archive_history_last_success`: its detail names where archives
//! go (as tmpa-archive decides it, `tmpa_maint::archive_config`: `/etc/tmpa/tmpa.toml` or
//! a trusted `{root}/tmpa.toml`, or the local `archive/` directories), and
//! with `--check-archive-store` one cheap request (a listing of at most one key) proves
//! the store answers. A store that does not is critical: the next archival would leave
//! every session in place.

use std::time::{Duration, Instant};

use serde::Serialize;
use tmpa_core::Root;
use tmpa_core::maintenance::store::Store;

use crate::{Check, Status};

/// Longest wait for the store in a probe (the patrol runs every few minutes).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of a probe's transient failure.
const PROBE_RETRIES: usize = 1;

/// What the patrol knows of the archive tier.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreInfo {
    /// `local` or the store's URL (`null` when tmpa.toml cannot be read).
    pub url: Option<String>,
    /// Whether the probe got an answer (`null` when there was no probe).
    pub reachable: Option<bool>,
    /// How long the probe took.
    pub probe_secs: Option<f64>,
    /// What went wrong (configuration or probe).
    pub error: Option<String>,
}

/// Adds the archive tier to the `archive_history_last_success` check; with `probe`, asks
/// the store once.
pub fn annotate(root: &Root, check: &mut Check, probe: bool) -> StoreInfo {
    let mut info = StoreInfo::default();
    // What tmpa-archive would use, believed on the same terms (a file the tree's owner
    // wrote is refused there, so it is reported here, and never probed).
    let config = match tmpa_maint::archive_config(root, None) {
        Ok(c) => c,
        Err(e) => {
            info.error = Some(e.chain());
            check.status = check.status.worst(Status::Warning);
            check.detail.push_str(&format!(
                "; the archive configuration cannot be used (the next archival will refuse to run): {}",
                e.chain()
            ));
            return info;
        }
    };
    let Some(mut config) = config else {
        info.url = Some("local".into());
        check
            .detail
            .push_str("; archives to the local archive/ directories");
        return info;
    };
    let url = config.url.to_string();
    info.url = Some(url.clone());
    check.detail.push_str(&format!("; archives to {url}"));
    if !probe {
        return info;
    }
    config.timeout = config.timeout.min(PROBE_TIMEOUT);
    let started = Instant::now();
    let result = Store::open_with_retries(&config, PROBE_RETRIES).and_then(|s| s.probe());
    info.probe_secs = Some(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            info.reachable = Some(true);
            check.detail.push_str(&format!(
                " (reachable: listed in {:.2} s)",
                started.elapsed().as_secs_f64()
            ));
        }
        Err(e) => {
            info.reachable = Some(false);
            info.error = Some(e.chain());
            check.status = Status::Critical;
            check.detail.push_str(&format!(
                "; the store cannot be reached, the next archival would leave every session in place: {}",
                e.chain()
            ));
        }
    }
    info
}
