//! What the TUN device hands the data plane with offloads on: a
//! virtio-net header and a packet, here arbitrary bytes. Cutting it into
//! segments and merging segments back must never panic, and every segment
//! written fits its slot.
#![no_main]

use esp::offload::{prepare, Coalescer, VnetHdr, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

const SLOT: usize = 1600;
const SLOTS: usize = 48;

fuzz_target!(|data: &[u8]| {
    let Some(hdr) = VnetHdr::parse(data) else {
        return;
    };
    let mut packet = data[VNET_HDR_LEN..].to_vec();
    let mut out = vec![0u8; SLOT * SLOTS];
    let mut lens = [0usize; SLOTS];
    if let Ok(n) = prepare(&hdr, &mut packet, &mut out, SLOT, 64, 1500, &mut lens) {
        assert!(n <= SLOTS);
        let mut c = Coalescer::default();
        for (i, len) in lens[..n].iter().enumerate() {
            assert!(*len <= 1500);
            let seg = &out[i * SLOT + 64..i * SLOT + 64 + len];
            if !c.push(seg) {
                c.flush(&mut |b| assert!(b.len() >= VNET_HDR_LEN));
                assert!(c.push(seg));
            }
        }
        c.flush(&mut |b| assert!(b.len() >= VNET_HDR_LEN));
    }
    // The raw bytes as a decrypted packet, too.
    let mut c = Coalescer::default();
    for chunk in data.chunks(97) {
        if !c.push(chunk) {
            c.flush(&mut |_| {});
            assert!(c.push(chunk));
        }
    }
    c.flush(&mut |_| {});
});
