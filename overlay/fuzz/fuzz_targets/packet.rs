//! The decoder, the TTL rewrite and ICMP error generation on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::packet;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; packet::ICMP_ERROR_MAX];
    let parsed = packet::parse(data);
    if let Some(n) = packet::icmp_net_unreachable(data, Ipv4Addr::new(10, 244, 0, 0), &mut out) {
        let h = parsed.expect("an error only about a valid packet");
        let e = packet::parse(&out[..n]).expect("a valid error");
        assert_eq!(e.dst, h.src);
        assert_eq!(packet::checksum(&out[20..n]), 0);
    }
    let mut p = data.to_vec();
    if packet::decrement_ttl(&mut p).is_some() && parsed.is_ok() {
        assert!(packet::parse(&p).is_ok());
    }
});
