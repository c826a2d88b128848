//! ESP decapsulation of arbitrary packets against an installed SA: never a
//! panic, never a packet delivered that does not verify.
#![no_main]

use esp::{decapsulate, ChildSaSpec, Cipher, Integrity, SaTable, Selector};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fn sel(a: &str, b: &str) -> Selector {
    Selector {
        start: a.parse().expect("ip"),
        end: b.parse().expect("ip"),
        protocol: 0,
        start_port: 0,
        end_port: 65535,
    }
}

fuzz_target!(|data: &[u8]| {
    let table = SaTable::new();
    for (spi, cipher, integ, klen) in [
        (0x100u32, Cipher::AesGcm16(256), None, 36usize),
        (
            0x101,
            Cipher::AesCbc(128),
            Some(Integrity::HmacSha256_128),
            16,
        ),
        (
            0x102,
            Cipher::CamelliaCbc(256),
            Some(Integrity::HmacSha512_256),
            32,
        ),
    ] {
        table
            .install(&ChildSaSpec {
                peer: "kyoto".into(),
                spi_in: spi,
                spi_out: spi + 0x1000,
                cipher,
                integrity: integ,
                // One SA with Extended Sequence Numbers, so that the
                // reconstruction of the high bits is fuzzed too.
                esn: spi == 0x101,
                encr_in: Zeroizing::new(vec![1; klen]),
                integ_in: Zeroizing::new(vec![2; 64]),
                encr_out: Zeroizing::new(vec![3; klen]),
                integ_out: Zeroizing::new(vec![4; 64]),
                local_ts: vec![sel("203.0.113.0", "203.0.113.127")],
                remote_ts: vec![sel("198.51.100.0", "198.51.100.63")],
                remote: "192.0.2.2:4500".parse().expect("addr"),
            })
            .expect("install");
    }
    let mut packet = data.to_vec();
    // Steer most inputs at a real SPI so that the crypto paths are reached.
    if packet.len() >= 4 && packet[0] & 1 == 0 {
        let spi = 0x100 + u32::from(packet[1] % 3);
        packet[..4].copy_from_slice(&spi.to_be_bytes());
    }
    let snapshot = table.snapshot();
    let delivered = decapsulate(&snapshot, &mut packet).is_ok();
    assert!(!delivered, "forged packets never verify");
});
