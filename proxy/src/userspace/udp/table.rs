//! The sessions of one UDP port by client address, in the order of their
//! last use, so that the least recently used one is found in O(log n) when
//! the port's bound is reached. Uses the table does not see (a backend's
//! reply, recorded by the session itself) are passed in when it looks for
//! the oldest: an entry whose own record is newer than its place is moved
//! forward then, and the search goes on. Pure: times are numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;

struct Entry<V> {
    /// Where the entry stands in `order`.
    used: u64,
    value: V,
}

/// Values by client, ordered by last use.
pub(super) struct Table<V> {
    entries: BTreeMap<SocketAddrV4, Entry<V>>,
    order: BTreeSet<(u64, SocketAddrV4)>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            entries: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<V> Table<V> {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, client: &SocketAddrV4) -> Option<&V> {
        self.entries.get(client).map(|e| &e.value)
    }

    /// Records a use of `client`'s entry at `now`.
    pub(super) fn touch(&mut self, client: SocketAddrV4, now: u64) {
        if let Some(e) = self.entries.get_mut(&client) {
            if e.used < now {
                self.order.remove(&(e.used, client));
                self.order.insert((now, client));
                e.used = now;
            }
        }
    }

    /// Adds (or replaces, returning the old value) `client`'s entry, used
    /// at `now`.
    pub(super) fn insert(&mut self, client: SocketAddrV4, value: V, now: u64) -> Option<V> {
        let old = self.remove(&client);
        self.entries.insert(client, Entry { used: now, value });
        self.order.insert((now, client));
        old
    }

    pub(super) fn remove(&mut self, client: &SocketAddrV4) -> Option<V> {
        let e = self.entries.remove(client)?;
        self.order.remove(&(e.used, *client));
        Some(e.value)
    }

    /// Removes the least recently used entry, where `last_use` tells an
    /// entry's latest use as recorded outside the table.
    pub(super) fn pop_oldest(&mut self, last_use: impl Fn(&V) -> u64) -> Option<(SocketAddrV4, V)> {
        while let Some(&(used, client)) = self.order.first() {
            let later = self
                .entries
                .get(&client)
                .map(|e| last_use(&e.value))
                .filter(|&t| t > used);
            match later {
                // Used since: move it to its true place and look again;
                // each entry moves at most once per search.
                Some(t) => self.touch(client, t),
                None => {
                    let value = self.remove(&client)?;
                    return Some((client, value));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::Ipv4Addr;

    fn c(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let mut t: Table<Cell<u64>> = Table::default();
        for p in 1..=4 {
            assert!(t.insert(c(p), Cell::new(0), u64::from(p)).is_none());
        }
        // Client 1 sent again; client 2's backend answered (recorded by
        // the session only).
        t.touch(c(1), 10);
        t.get(&c(2)).expect("2").set(11);
        let last = |v: &Cell<u64>| v.get();
        assert_eq!(t.pop_oldest(last).map(|(k, _)| k), Some(c(3)));
        assert_eq!(t.pop_oldest(last).map(|(k, _)| k), Some(c(4)));
        assert_eq!(t.pop_oldest(last).map(|(k, _)| k), Some(c(1)));
        assert_eq!(t.pop_oldest(last).map(|(k, _)| k), Some(c(2)));
        assert!(t.pop_oldest(last).is_none());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn replace_and_remove_keep_the_order_consistent() {
        let mut t: Table<u64> = Table::default();
        t.insert(c(1), 1, 1);
        t.insert(c(2), 2, 2);
        assert_eq!(t.insert(c(1), 10, 3), Some(1), "replaced");
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(&c(2)), Some(2));
        assert_eq!(t.remove(&c(2)), None);
        t.touch(c(9), 5); // no such entry: nothing happens
        assert_eq!(t.pop_oldest(|_| 0), Some((c(1), 10)));
        assert_eq!(t.len(), 0);
        assert!(t.order.is_empty());
    }
}
