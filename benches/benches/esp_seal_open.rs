//! ESP seal and open throughput per suite and packet size.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

criterion_group!(benches, bench);
criterion_main!(benches);
