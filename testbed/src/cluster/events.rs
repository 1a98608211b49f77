//! The other machines' last events, as each machine's agent keeps them in
//! etcd (`/testbed/NAME/events/MACHINE`, the last
//! [`super::EVENTS_KEPT`], bound to the machine's session), for `events`
//! on any machine of a testbed spread over several.

use crate::events::Event;
use overlay::etcd::{EtcdError, EtcdStore};

/// Every machine's last events but `me`'s, each marked with its machine,
/// oldest first (a value that is not a list of events is skipped).
pub fn others(store: &EtcdStore, testbed: &str, me: &str) -> Result<Vec<Event>, EtcdError> {
    let prefix = super::events_prefix(testbed);
    let list = store.list_prefix(&prefix)?;
    Ok(merge(&prefix, me, &list.kvs))
}

/// The events under `prefix` in `kvs` of every machine but `me`, marked
/// and ordered by time (stable: one machine's keep their order).
pub fn merge(prefix: &str, me: &str, kvs: &[(String, Vec<u8>)]) -> Vec<Event> {
    let mut out: Vec<Event> = kvs
        .iter()
        .filter_map(|(k, v)| {
            let machine = k.strip_prefix(prefix)?;
            if machine == me || crate::state::check_name(machine).is_err() {
                return None;
            }
            let events: Vec<Event> = serde_json::from_slice(v).ok()?;
            Some(events.into_iter().map(move |mut e| {
                e.machine = Some(machine.to_string());
                e
            }))
        })
        .flatten()
        .collect();
    out.sort_by_key(|e| e.unix_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    #[test]
    fn the_others_events_are_marked_and_merged_by_time() {
        let ev = |ms: u64, o: &str| Event {
            unix_ms: ms,
            ..Event::now(EventKind::PodReady, o, "ready")
        };
        let json = |v: &[Event]| serde_json::to_vec(v).unwrap();
        let p = "/testbed/t/events/";
        let kvs = vec![
            (format!("{p}alpha"), json(&[ev(1, "pod a")])),
            (format!("{p}beta"), json(&[ev(2, "pod b"), ev(5, "pod b2")])),
            (format!("{p}gamma"), json(&[ev(3, "pod c")])),
            (format!("{p}delta"), b"not events".to_vec()),
            (format!("{p}../x"), json(&[ev(4, "pod x")])),
        ];
        let got = merge(p, "alpha", &kvs);
        let seen: Vec<(u64, &str, Option<&str>)> = got
            .iter()
            .map(|e| (e.unix_ms, e.object.as_str(), e.machine.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (2, "pod b", Some("beta")),
                (3, "pod c", Some("gamma")),
                (5, "pod b2", Some("beta"))
            ]
        );
    }
}
