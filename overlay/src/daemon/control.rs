//! The control thread: follows the leases (routes and lease holders, and the
//! lease files that could not be read), the impairment file, and writes the
//! stats file.

use super::shared::{Routes, Shared};
use super::{ImpairFile, LeaseSource};
use crate::cidr::Ipv4Net;
use crate::registry::BadLease;
use crate::routes::RouteTable;
use crate::stats;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

const LEASE_PERIOD: Duration = Duration::from_millis(200);
const IMPAIR_PERIOD: Duration = Duration::from_millis(200);
const STATS_PERIOD: Duration = Duration::from_millis(500);

pub(super) struct Control {
    leases: LeaseSource,
    last_leases: Option<Vec<(Ipv4Net, Ipv4Addr)>>,
    last_bad: Vec<BadLease>,
    impair_file: Option<PathBuf>,
    impair_seen: Option<(SystemTime, u64)>,
    stats_file: Option<PathBuf>,
    stats_warned: bool,
}

impl Control {
    pub fn new(
        leases: LeaseSource,
        impair_file: Option<PathBuf>,
        stats_file: Option<PathBuf>,
    ) -> Control {
        Control {
            leases,
            last_leases: None,
            last_bad: Vec::new(),
            impair_file,
            impair_seen: None,
            stats_file,
            stats_warned: false,
        }
    }

    /// Runs until the stop flag is set or the daemon quits.
    pub fn run(&mut self, sh: &Shared) {
        let start = Instant::now();
        let (mut next_lease, mut next_impair, mut next_stats) = (
            start + LEASE_PERIOD,
            start + IMPAIR_PERIOD,
            start + STATS_PERIOD,
        );
        while !sh.stop.load(Ordering::Relaxed) && !sh.quitting() {
            let now = Instant::now();
            if now >= next_lease {
                self.refresh_leases(sh);
                next_lease = now + LEASE_PERIOD;
            }
            if now >= next_impair {
                self.check_impair_file(sh);
                next_impair = now + IMPAIR_PERIOD;
            }
            if now >= next_stats {
                self.write_stats(sh);
                next_stats = now + STATS_PERIOD;
            }
            let next = next_lease.min(next_impair).min(next_stats);
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    /// Reads the leases; publishes new routes when they changed, and reports
    /// the lease files that could not be read.
    pub fn refresh_leases(&mut self, sh: &Shared) {
        let set = (self.leases)();
        if set.bad != self.last_bad {
            for b in set.bad.iter().filter(|b| !self.last_bad.contains(b)) {
                tracing::warn!("lease file {}: {}; skipped", b.file, b.error);
            }
            sh.stats.set_bad_leases(set.bad.clone());
            self.last_bad = set.bad;
        }
        let mut leases = set.leases;
        leases.sort();
        leases.dedup();
        if self.last_leases.as_ref() == Some(&leases) {
            return;
        }
        let own = sh.own_subnet();
        let table = RouteTable::from_routes(leases.iter().filter(|(net, _)| *net != own).copied());
        let mut holders: Vec<u32> = leases.iter().map(|(_, ip)| u32::from(*ip)).collect();
        holders.sort_unstable();
        holders.dedup();
        tracing::debug!(leases = leases.len(), "overlay routes updated");
        sh.stats.set_leases(leases.len() as u64);
        sh.routes.publish(Routes { table, holders });
        self.last_leases = Some(leases);
    }

    /// Applies the impairment file when it changed (or went).
    pub fn check_impair_file(&mut self, sh: &Shared) {
        let Some(path) = &self.impair_file else {
            return;
        };
        let seen = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if seen == self.impair_seen {
            return;
        }
        let had = self.impair_seen.is_some();
        self.impair_seen = seen;
        let file = match seen {
            None if had => ImpairFile::default(),
            None => return,
            Some(_) => match read_impair_file(path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("{}: {e}; impairments unchanged", path.display());
                    return;
                }
            },
        };
        tracing::info!(egress = ?file.egress, ingress = ?file.ingress, "impairments set");
        sh.egress.apply(file.egress);
        sh.ingress.apply(file.ingress);
    }

    /// Updates the gauges and writes the stats file.
    pub fn write_stats(&mut self, sh: &Shared) {
        let queued = sh.egress.line.len() + sh.ingress.line.len();
        sh.stats.set_delay_queued(queued as u64);
        let Some(path) = &self.stats_file else {
            return;
        };
        if let Err(e) = stats::write_snapshot(path, &sh.stats.snapshot()) {
            if !self.stats_warned {
                tracing::warn!("{}: {e}", path.display());
                self.stats_warned = true;
            }
        }
    }
}

/// Why an impairment file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImpairFileError {
    /// It cannot be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// It is not an impairment file.
    #[error(transparent)]
    Parse(#[from] serde_json::Error),
}

/// Reads an impairment file.
pub fn read_impair_file(path: &Path) -> Result<ImpairFile, ImpairFileError> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}
