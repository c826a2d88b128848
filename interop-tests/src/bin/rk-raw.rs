//! Hostile traffic for the security tests, sent with raw sockets.
//!
//! ```text
//! rk-raw flood DST_IP SPOOF_PREFIX COUNT RATE [refused]
//!                                               # IKE_SA_INIT requests from spoofed sources
//!                                               # (`refused`: offering PRF_HMAC_MD5, which the hub refuses)
//! rk-raw replay PCAP TIMES                      # re-send captured ESP-in-UDP packets verbatim
//! rk-raw garbage DST_IP COUNT                   # truncated and corrupted IKE and ESP datagrams
//! ```
//! The IKE_SA_INIT template is a request captured from strongSwan; each copy
//! gets its own initiator SPI.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const INIT: &[u8] = include_bytes!("../../../ike/tests/data/strongswan-ike-sa-init-request.bin");

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn raw() -> std::io::Result<Socket> {
    // IPPROTO_RAW: we write the IP header ourselves (IP_HDRINCL).
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))
}

/// An IPv4/UDP packet; the kernel fills in the IP checksum, a zero UDP
/// checksum means "none" (RFC 768).
fn udp4(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.ip().octets());
    p.extend_from_slice(&dst.ip().octets());
    p.extend_from_slice(&src.port().to_be_bytes());
    p.extend_from_slice(&dst.port().to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// The captured IKE_SA_INIT, its one proposal's PRF (SHA-256) turned into
/// PRF_HMAC_MD5, which no CRYPTREC profile accepts: the hub answers
/// NO_PROPOSAL_CHOSEN.
fn refused_init() -> Vec<u8> {
    let mut ike = INIT.to_vec();
    // Transform type 2 (PRF), ID 5 (HMAC-SHA256), in the SA payload.
    assert_eq!(ike[0x38..0x3c], [2, 0, 0, 5], "template changed");
    ike[0x3b] = 1;
    ike
}

fn flood(dst: Ipv4Addr, prefix: &str, count: u64, rate: u64, refused: bool) -> std::io::Result<()> {
    let template = if refused {
        refused_init()
    } else {
        INIT.to_vec()
    };
    let (net, len) = prefix
        .split_once('/')
        .ok_or_else(|| std::io::Error::other("prefix"))?;
    let net: Ipv4Addr = net.parse().map_err(std::io::Error::other)?;
    let len: u32 = len.parse().map_err(std::io::Error::other)?;
    let host_bits = 32 - len;
    let sock = raw()?;
    let target = SockAddr::from(SocketAddrV4::new(dst, 500));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let start = Instant::now();
    let mut sent = 0u64;
    for i in 0..count {
        let host = (rng.next() as u32) & ((1u32 << host_bits) - 1);
        let src = SocketAddrV4::new(
            Ipv4Addr::from(u32::from(net) | host),
            1024 + (rng.next() % 60000) as u16,
        );
        let mut ike = template.clone();
        ike[..8].copy_from_slice(&rng.next().to_be_bytes());
        if sock
            .send_to(&udp4(src, SocketAddrV4::new(dst, 500), &ike), &target)
            .is_ok()
        {
            sent += 1;
        }
        // Pace to the rate.
        let due = Duration::from_secs_f64((i + 1) as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.2},\"rate\":{:.0}}}",
        sent as f64 / secs
    );
    Ok(())
}

/// ESP-in-UDP packets (IPv4, Ethernet capture) from a pcap file.
fn captured_esp(path: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let d = std::fs::read(path)?;
    if d.len() < 24 {
        return Err(std::io::Error::other("not a pcap file"));
    }
    let linktype = u32::from_le_bytes([d[20], d[21], d[22], d[23]]);
    let link_header = match linktype {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        _ => return Err(std::io::Error::other(format!("link type {linktype}"))),
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes([d[off + 8], d[off + 9], d[off + 10], d[off + 11]]) as usize;
        off += 16;
        let Some(frame) = d.get(off..off + incl) else {
            break;
        };
        off += incl;
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let payload = &udp[8..];
        // ESP: not the non-ESP marker of IKE, not a one-byte keepalive.
        if dport == 4500 && payload.len() > 8 && payload[..4] != [0, 0, 0, 0] {
            // Captured on egress, the UDP checksum may be a partial one
            // left for offload; zero means "no checksum" over IPv4.
            let mut packet = ip.to_vec();
            packet[ihl + 6..ihl + 8].copy_from_slice(&[0, 0]);
            out.push(packet);
        }
    }
    Ok(out)
}

fn replay(path: &str, times: u32) -> std::io::Result<()> {
    let packets = captured_esp(path)?;
    let sock = raw()?;
    let mut sent = 0;
    for p in &packets {
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        for _ in 0..times {
            sock.send_to(p, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
            sent += 1;
        }
    }
    println!("{{\"captured\":{},\"sent\":{sent}}}", packets.len());
    Ok(())
}

fn garbage(dst: Ipv4Addr, count: u32) -> std::io::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0;
    for i in 0..count {
        let port = if i % 2 == 0 { 500 } else { 4500 };
        let payload: Vec<u8> = match i % 4 {
            // A truncated IKE_SA_INIT (with the marker on 4500).
            0 | 1 => {
                let cut = (rng.next() as usize) % INIT.len();
                let mut m = if port == 4500 {
                    vec![0, 0, 0, 0]
                } else {
                    Vec::new()
                };
                m.extend_from_slice(&INIT[..cut]);
                m
            }
            // A corrupted IKE_SA_INIT.
            2 => {
                let mut m = INIT.to_vec();
                let at = (rng.next() as usize) % m.len();
                m[at] ^= 0xff;
                m
            }
            // ESP-shaped noise: random SPI, random bytes.
            _ => (0..(rng.next() % 300) as usize)
                .map(|_| rng.next() as u8 | 1)
                .collect(),
        };
        sock.send_to(&payload, SocketAddrV4::new(dst, port))?;
        sent += 1;
    }
    println!("{{\"sent\":{sent}}}");
    Ok(())
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    let r = match a.get(1).map(String::as_str) {
        Some("flood") if a.len() == 6 || (a.len() == 7 && a[6] == "refused") => {
            match (a[2].parse(), a[4].parse(), a[5].parse()) {
                (Ok(dst), Ok(count), Ok(rate)) => flood(dst, &a[3], count, rate, a.len() == 7),
                _ => Err(std::io::Error::other("bad arguments")),
            }
        }
        Some("replay") if a.len() == 4 => match a[3].parse() {
            Ok(times) => replay(&a[2], times),
            Err(_) => Err(std::io::Error::other("bad arguments")),
        },
        Some("garbage") if a.len() == 4 => match (a[2].parse(), a[3].parse()) {
            (Ok(dst), Ok(count)) => garbage(dst, count),
            _ => Err(std::io::Error::other("bad arguments")),
        },
        _ => Err(std::io::Error::other(
            "usage: rk-raw flood DST PREFIX COUNT RATE [refused] | replay PCAP TIMES | garbage DST COUNT",
        )),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rk-raw: {e}");
            ExitCode::FAILURE
        }
    }
}
