//! The delay queues: packets the impairment engine holds back wait here, in
//! a binary heap by due time (bounded in packets and bytes), until a thread
//! per direction sends them.

use super::batch::SendBatch;
use super::shared::{ImpairSlot, Shared};
use super::sys::tun_write;
use super::{DaemonError, BATCH, IDLE_MS};
use crate::lock;
use crate::stats::{Counter, Shard};
use std::collections::BinaryHeap;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Bounds of one direction's delay queue.
pub(super) const DELAY_MAX_PACKETS: usize = 100_000;
pub(super) const DELAY_MAX_BYTES: usize = 128 << 20;
/// Buffers kept for reuse.
const POOL_MAX: usize = 4096;

/// A packet waiting for its time.
pub(super) struct Held {
    at_us: u64,
    seq: u64,
    to: SocketAddrV4,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    /// Reversed, so that the heap's top is the earliest (then the first held).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

#[derive(Default)]
struct DelayState {
    heap: BinaryHeap<Held>,
    /// Buffers of packets already sent, for reuse.
    pool: Vec<Vec<u8>>,
    bytes: usize,
    seq: u64,
}

/// One direction's queue of held packets.
#[derive(Default)]
pub(super) struct DelayLine {
    state: Mutex<DelayState>,
    cv: Condvar,
}

impl DelayLine {
    /// Holds `copies` copies of `data` until `at_us`; a copy that would take
    /// the queue beyond its bounds is dropped and counted.
    pub fn hold(&self, at_us: u64, copies: u8, to: SocketAddrV4, data: &[u8], shard: &Shard) {
        let mut st = lock(&self.state);
        let mut earliest = false;
        for _ in 0..copies {
            if st.heap.len() >= DELAY_MAX_PACKETS
                || st.bytes.saturating_add(data.len()) > DELAY_MAX_BYTES
            {
                shard.inc(Counter::DelayOverflow);
                continue;
            }
            let mut buf = st.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(data);
            st.bytes += data.len();
            st.seq += 1;
            let seq = st.seq;
            earliest |= st.heap.peek().is_none_or(|h| h.at_us > at_us);
            st.heap.push(Held {
                at_us,
                seq,
                to,
                data: buf,
            });
            shard.inc(Counter::Delayed);
        }
        drop(st);
        if earliest {
            self.cv.notify_one();
        }
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        lock(&self.state).heap.len()
    }

    /// Wakes the thread serving the queue (to see the quit flag).
    pub fn wake_all(&self) {
        self.cv.notify_all();
    }

    /// Waits until packets are due (or the daemon quits), then takes up to
    /// `BATCH` of them into `due`. False when quitting.
    fn take_due(&self, sh: &Shared, due: &mut Vec<Held>) -> bool {
        let mut st = lock(&self.state);
        loop {
            if sh.quitting() {
                return false;
            }
            let now = sh.now_us();
            let wait_us = match st.heap.peek() {
                Some(h) if h.at_us <= now => break,
                Some(h) => (h.at_us - now).min(IDLE_MS as u64 * 1000),
                None => IDLE_MS as u64 * 1000,
            };
            st = self
                .cv
                .wait_timeout(st, Duration::from_micros(wait_us))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let now = sh.now_us();
        while due.len() < BATCH && st.heap.peek().is_some_and(|h| h.at_us <= now) {
            let Some(h) = st.heap.pop() else { break };
            st.bytes = st.bytes.saturating_sub(h.data.len());
            due.push(h);
        }
        true
    }

    /// Gives the buffers of sent packets back for reuse.
    fn recycle(&self, due: &mut Vec<Held>) {
        let mut st = lock(&self.state);
        for h in due.drain(..) {
            if st.pool.len() < POOL_MAX {
                st.pool.push(h.data);
            }
        }
    }
}

/// Where a delay queue's packets go.
#[derive(Clone, Copy)]
pub(super) enum Sink {
    Udp(RawFd),
    Tun(RawFd),
}

/// Serves one direction's delay queue until the daemon quits.
pub(super) fn delay_loop(
    sh: &Shared,
    slot: &ImpairSlot,
    sink: Sink,
    shard: &Shard,
) -> Result<(), DaemonError> {
    let line = &slot.line;
    let mut due: Vec<Held> = Vec::with_capacity(BATCH);
    let mut batch = SendBatch::new(BATCH);
    while line.take_due(sh, &mut due) {
        match sink {
            Sink::Udp(fd) => {
                for h in &due {
                    if batch.is_full() {
                        batch.flush(fd, shard);
                    }
                    batch.push(&h.data, h.to);
                }
                batch.flush(fd, shard);
            }
            Sink::Tun(fd) => {
                let (mut packets, mut bytes) = (0u64, 0u64);
                for h in &due {
                    if tun_write(fd, sh.vnet, &h.data) {
                        packets += 1;
                        bytes += h.data.len() as u64;
                    } else {
                        shard.inc(Counter::TunWriteError);
                    }
                }
                shard.add(Counter::UdpToTunPackets, packets);
                shard.add(Counter::UdpToTunBytes, bytes);
            }
        }
        line.recycle(&mut due);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::net::Ipv4Addr;

    #[test]
    fn held_packets_come_out_earliest_first_then_in_order() {
        let mut heap = BinaryHeap::new();
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        for (at_us, seq) in [(30, 1), (10, 2), (10, 3), (20, 4)] {
            heap.push(Held {
                at_us,
                seq,
                to,
                data: Vec::new(),
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| heap.pop().map(|h| h.seq)).collect();
        assert_eq!(order, vec![2, 3, 4, 1]);
    }

    /// The queue never holds more than its bounds, whatever is offered, and
    /// counts every copy it refuses.
    #[test]
    fn the_delay_queue_keeps_its_bounds() {
        let line = DelayLine::default();
        let stats = Stats::new(1);
        let shard = stats.shard(0);
        let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let big = vec![0u8; 65535];
        let mut offered = 0u64;
        for i in 0..2100u64 {
            let copies = 1 + (i % 2) as u8;
            line.hold(i, copies, to, &big, shard);
            offered += u64::from(copies);
        }
        let st = lock(&line.state);
        assert!(st.bytes <= DELAY_MAX_BYTES && st.heap.len() <= DELAY_MAX_PACKETS);
        assert_eq!(
            st.bytes,
            st.heap.iter().map(|h| h.data.len()).sum::<usize>()
        );
        let s = stats.snapshot();
        assert_eq!(s.delayed + s.drops.delay_overflow, offered);
        assert_eq!(s.delayed as usize, DELAY_MAX_BYTES / 65535);
    }
}
