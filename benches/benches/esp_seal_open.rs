//! ESP seal and open throughput per suite and packet size, and the TUN
//! offload path around it: cutting a TSO super-packet into segments,
//! merging decrypted segments back (GRO), and the per-packet header work
//! (selector flow parse, MSS clamp).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use esp::offload::{prepare, Coalescer, VnetHdr, VNET_HDR_LEN};
use esp::packet::{SaCrypto, HEADROOM, TAILROOM};
use esp::{Cipher, Integrity};

fn suites() -> Vec<(&'static str, Cipher, Option<Integrity>, usize)> {
    vec![
        ("aes128gcm16", Cipher::AesGcm16(128), None, 20),
        ("aes256gcm16", Cipher::AesGcm16(256), None, 36),
        (
            "aes256-sha256",
            Cipher::AesCbc(256),
            Some(Integrity::HmacSha256_128),
            32,
        ),
        (
            "camellia256-sha256",
            Cipher::CamelliaCbc(256),
            Some(Integrity::HmacSha256_128),
            32,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, cipher, integ, klen) in suites() {
        let crypto =
            SaCrypto::new(cipher, integ, &vec![7u8; klen], &[9u8; 32], false).expect("keys");
        let mut group = c.benchmark_group(format!("esp/{name}"));
        for size in [64usize, 512, 1400] {
            group.throughput(Throughput::Bytes(size as u64));
            let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
            let mut seq = 0u64;
            group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, &size| {
                b.iter(|| {
                    seq += 1;
                    crypto
                        .seal(&mut buf, HEADROOM..HEADROOM + size, 1, seq, 4, &mut |iv| {
                            iv.fill(seq as u8);
                            Ok(())
                        })
                        .expect("seal")
                })
            });
            let out = crypto
                .seal(&mut buf, HEADROOM..HEADROOM + size, 1, 1, 4, &mut |iv| {
                    iv.fill(1);
                    Ok(())
                })
                .expect("seal");
            let sealed = buf[out].to_vec();
            let mut work = sealed.clone();
            group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
                b.iter(|| {
                    work.copy_from_slice(&sealed);
                    crypto.open(&mut work, 1).expect("open")
                })
            });
        }
        group.finish();
    }
}

/// RFC 1071 sum, for building the benchmark's input.
fn fold_sum(data: &[u8]) -> u16 {
    let mut acc: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// A TCP/IPv4 super-packet with `payload` bytes, as TSO hands it over:
/// a virtio-net header asking for TCPv4 segmentation at `mss`.
fn super_packet(payload: usize, mss: u16) -> (VnetHdr, Vec<u8>) {
    let mut p = vec![0u8; 40 + payload];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((40 + payload).min(65535) as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[203, 0, 113, 1]);
    p[16..20].copy_from_slice(&[198, 51, 100, 1]);
    let c = !fold_sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&5201u16.to_be_bytes());
    p[22..24].copy_from_slice(&40000u16.to_be_bytes());
    p[24..28].copy_from_slice(&1000u32.to_be_bytes());
    p[32] = 0x50;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&512u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut h = [0u8; VNET_HDR_LEN];
    h[1] = 1; // GSO_TCPV4
    h[2..4].copy_from_slice(&40u16.to_ne_bytes());
    h[4..6].copy_from_slice(&mss.to_ne_bytes());
    h[6..8].copy_from_slice(&20u16.to_ne_bytes());
    h[8..10].copy_from_slice(&16u16.to_ne_bytes());
    (VnetHdr::parse(&h).expect("vnet header"), p)
}

/// The TUN offload path: TSO split (outbound) and GRO merge (inbound) of
/// a 62 KiB super-packet at the 1358-byte tunnel MTU's MSS, and the
/// per-packet header work on a SYN.
fn offload(c: &mut Criterion) {
    const SLOT: usize = 1600;
    const MSS: u16 = 1318;
    let payload = 47 * usize::from(MSS);
    let (hdr, packet) = super_packet(payload, MSS);
    let mut group = c.benchmark_group("offload");
    group.throughput(Throughput::Bytes(payload as u64));
    let mut work = packet.clone();
    let mut out = vec![0u8; SLOT * 64];
    let mut lens = [0usize; 64];
    group.bench_function("tso_split_62k", |b| {
        b.iter(|| {
            work.copy_from_slice(&packet);
            prepare(&hdr, &mut work, &mut out, SLOT, 32, 1500, &mut lens).expect("prepare")
        })
    });
    let n = prepare(&hdr, &mut work, &mut out, SLOT, 32, 1500, &mut lens).expect("prepare");
    let segments: Vec<Vec<u8>> = (0..n)
        .map(|i| out[i * SLOT + 32..i * SLOT + 32 + lens[i]].to_vec())
        .collect();
    let mut coalescer = Coalescer::default();
    group.bench_function("gro_merge_62k", |b| {
        b.iter(|| {
            let mut written = 0;
            for s in &segments {
                if !coalescer.push(s) {
                    coalescer.flush(&mut |w| written += w.len());
                    coalescer.push(s);
                }
            }
            coalescer.flush(&mut |w| written += w.len());
            written
        })
    });
    group.finish();

    let mut syn = segments[0][..40].to_vec();
    syn[32] = 0x70; // 28-byte header: MSS and SACK-permitted
    syn[33] = 0x02;
    syn.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]);
    syn[2..4].copy_from_slice(&48u16.to_be_bytes());
    let mut group = c.benchmark_group("headers");
    group.bench_function("flow_parse", |b| {
        b.iter(|| esp::selector::Flow::parse(std::hint::black_box(&syn)))
    });
    let mut work = syn.clone();
    group.bench_function("clamp_mss_syn", |b| {
        b.iter(|| {
            work.copy_from_slice(&syn);
            esp::mtu::clamp_mss(&mut work, 1358)
        })
    });
    // What every other TCP packet costs: the clamp looks and leaves it.
    let mut ack = segments[0].clone();
    group.bench_function("clamp_mss_ack", |b| {
        b.iter(|| esp::mtu::clamp_mss(std::hint::black_box(&mut ack), 1358))
    });
    group.finish();
}

criterion_group!(benches, bench, offload);
criterion_main!(benches);
