//! The coalescer on a burst of packets cut from the input (a length byte
//! before each), rendering every merged run.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay::gso::{self, Coalescer, Write};
use overlay::packet;

fuzz_target!(|data: &[u8]| {
    let mut c = Coalescer::new();
    let mut rest = data;
    let mut at = 0;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let off = at + 1;
        if let Ok(h) = packet::parse(&tail[..n]) {
            assert!(c.push(data, off, &h));
        }
        at = off + n;
        rest = &tail[n..];
    }
    let mut hdr = [0u8; gso::VNET_HDR_LEN + gso::MAX_HEADERS];
    for w in c.writes() {
        if let Write::Merged { run } = *w {
            if c.run_len(run) > 1 {
                let n = c.render(run, data, &mut hdr).expect("renders");
                assert!(n <= hdr.len());
            }
        }
    }
});
