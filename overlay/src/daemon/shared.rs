//! What the daemon's threads share: the stop and quit flags and the first
//! failure, the current routes (swapped whole on a lease change), and each
//! direction's impairment engine with its delay queue.
//!
//! Locks here never spread a panic: they are taken with [`crate::lock`],
//! which ignores poisoning (a thread that panicked has already made the
//! daemon quit, see [`super::guard`]; the others only need to get to their
//! quit check).

use super::delay::DelayLine;
use super::{DaemonConfig, DaemonError};
use crate::impair::{Impairer, Impairment};
use crate::lock;
use crate::routes::RouteTable;
use crate::stats::Stats;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub(super) struct Shared<'a> {
    pub stop: &'a AtomicBool,
    /// Set when the workers must end (stop, or a failure in one of them).
    quit: AtomicBool,
    failure: Mutex<Option<DaemonError>>,
    pub routes: RouteCell,
    pub stats: Arc<Stats>,
    pub egress: ImpairSlot,
    pub ingress: ImpairSlot,
    own_addr: u32,
    own_mask: u32,
    pub icmp_src: Ipv4Addr,
    pub port: u16,
    clock: Instant,
    pub tun_name: String,
    /// The TUN queues carry virtio-net headers (offload mode).
    pub vnet: bool,
}

/// The netmask of a prefix length.
pub(super) fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl<'a> Shared<'a> {
    pub fn new(
        cfg: &DaemonConfig,
        stop: &'a AtomicBool,
        stats: Arc<Stats>,
        vnet: bool,
    ) -> Shared<'a> {
        let (egress_seed, egress_stream) =
            cfg.impair_egress.as_ref().map_or((0, 0), |s| (s.1, s.2));
        let (ingress_seed, ingress_stream) =
            cfg.impair_ingress.as_ref().map_or((0, 1), |s| (s.1, s.2));
        let shared = Shared {
            stop,
            quit: AtomicBool::new(false),
            failure: Mutex::new(None),
            routes: RouteCell::new(),
            stats,
            egress: ImpairSlot::new(egress_seed, egress_stream),
            ingress: ImpairSlot::new(ingress_seed, ingress_stream),
            own_addr: u32::from(cfg.own_subnet.network()),
            own_mask: prefix_mask(cfg.own_subnet.prefix_len()),
            icmp_src: cfg.network.network(),
            port: cfg.bind.port(),
            clock: Instant::now(),
            tun_name: cfg.tun.clone(),
            vnet,
        };
        if let Some((imp, _, _)) = &cfg.impair_egress {
            shared.egress.apply(imp.clone());
        }
        if let Some((imp, _, _)) = &cfg.impair_ingress {
            shared.ingress.apply(imp.clone());
        }
        shared
    }

    pub fn now_us(&self) -> u64 {
        self.clock.elapsed().as_micros() as u64
    }

    /// Whether `dst` is in this node's subnet.
    pub fn is_own(&self, dst: u32) -> bool {
        dst & self.own_mask == self.own_addr
    }

    /// This node's subnet.
    pub fn own_subnet(&self) -> crate::Ipv4Net {
        crate::Ipv4Net::new(
            Ipv4Addr::from(self.own_addr),
            self.own_mask.count_ones() as u8,
        )
    }

    pub fn quitting(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    /// Makes every thread end soon: sets the quit flag and wakes the delay
    /// threads.
    pub fn quit_all(&self) {
        self.quit.store(true, Ordering::SeqCst);
        self.egress.line.wake_all();
        self.ingress.line.wake_all();
    }

    /// Records a failure (the first one is what the daemon returns) and makes
    /// every thread end.
    pub fn fail(&self, e: DaemonError) {
        tracing::error!("overlay data path: {e}; stopping the daemon");
        lock(&self.failure).get_or_insert(e);
        self.quit_all();
    }

    /// The first failure, if any.
    pub fn take_failure(&self) -> Option<DaemonError> {
        lock(&self.failure).take()
    }
}

/// The routes and the set of lease holders, replaced whole on a change.
#[derive(Default)]
pub(super) struct Routes {
    pub table: RouteTable,
    /// Public addresses of the current lease holders, sorted.
    pub holders: Vec<u32>,
}

impl Routes {
    #[inline]
    pub fn is_holder(&self, ip: u32) -> bool {
        self.holders.binary_search(&ip).is_ok()
    }
}

pub(super) struct RouteCell {
    generation: AtomicU64,
    current: Mutex<Arc<Routes>>,
}

impl RouteCell {
    fn new() -> RouteCell {
        RouteCell {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(Routes::default())),
        }
    }

    pub fn publish(&self, routes: Routes) {
        *lock(&self.current) = Arc::new(routes);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn view(&self) -> RouteView {
        RouteView {
            generation: self.generation.load(Ordering::Acquire),
            routes: lock(&self.current).clone(),
        }
    }
}

/// A worker's copy of the current routes.
pub(super) struct RouteView {
    generation: u64,
    pub routes: Arc<Routes>,
}

impl RouteView {
    #[inline]
    pub fn refresh(&mut self, cell: &RouteCell) {
        let g = cell.generation.load(Ordering::Acquire);
        if g != self.generation {
            *self = cell.view();
        }
    }
}

/// One direction's impairment: the engine, whether it does anything, and the
/// queue of packets it delayed.
pub(super) struct ImpairSlot {
    active: AtomicBool,
    engine: Mutex<Option<Impairer>>,
    seed: u64,
    stream: u64,
    pub line: DelayLine,
}

impl ImpairSlot {
    fn new(seed: u64, stream: u64) -> ImpairSlot {
        ImpairSlot {
            active: AtomicBool::new(false),
            engine: Mutex::new(None),
            seed,
            stream,
            line: DelayLine::default(),
        }
    }

    pub fn apply(&self, cfg: Impairment) {
        if let Err(e) = cfg.validate() {
            tracing::warn!("impairment: {e}; treated as 100%");
        }
        let mut engine = lock(&self.engine);
        let e = match engine.as_mut() {
            Some(e) => {
                e.set(cfg);
                e
            }
            None => engine.insert(Impairer::new(cfg, self.seed, self.stream)),
        };
        self.active.store(!e.is_noop(), Ordering::SeqCst);
    }

    /// The engine, locked, when it does something.
    #[inline]
    pub fn engaged(&self) -> Option<MutexGuard<'_, Option<Impairer>>> {
        if self.active.load(Ordering::Relaxed) {
            Some(lock(&self.engine))
        } else {
            None
        }
    }
}
