//! Segmentation of a super-packet whose gso_size (the first two bytes) may
//! lie, and the split of its segments into UDP GSO messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::{gso, packet};

fuzz_target!(|data: &[u8]| {
    let Some((mss, pkt)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mss = usize::from(u16::from_be_bytes(*mss));
    let mut out = vec![0u8; 1 << 17];
    if let Some(s) = gso::segment_tcp4(pkt, mss, &mut out) {
        assert!(s.total <= out.len());
        for r in s.ranges() {
            let seg = &out[r.clone()];
            assert_eq!(packet::parse(seg).map(|h| h.total_len), Ok(r.len()));
        }
    }
    if let Some((s, hl)) = gso::segment_tcp4_headers(pkt, mss, &mut out) {
        let payload = s.total - s.count * hl;
        let mut end = 0;
        for g in gso::gso_groups(s, hl, payload, 65_000) {
            assert_eq!(g.payload.start, end);
            end = g.payload.end;
        }
        assert_eq!(end, payload);
    }
});
