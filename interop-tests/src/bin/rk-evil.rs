//! A malicious facility for the security tests: it authenticates like any
//! other (IKEv2 with PSK, built from renkei's own `ike` and `esp` crates),
//! then sends ESP whose inner source address lies outside the selectors it
//! was given — trying to speak as another facility.
//!
//! ```text
//! rk-evil HUB_ADDR ID PSK LOCAL_TS REMOTE_TS SPOOFED_SRC LEGIT_SRC DST COUNT
//! ```
//! Prints {"spoofed":COUNT,"legit":1} once the packets are sent.

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{ChildSaInfo, Config, Endpoint, Event, Lifetimes, PeerConfig};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[8, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

fn esp_suite(child: &ChildSaInfo) -> (esp::Cipher, Option<esp::Integrity>) {
    use ike::crypto::{Encr, Integ};
    let cipher = match child.suite.encr {
        Encr::AesGcm16 { bits } => esp::Cipher::AesGcm16(bits),
        Encr::AesCbc { bits } => esp::Cipher::AesCbc(bits),
        Encr::CamelliaCbc { bits } => esp::Cipher::CamelliaCbc(bits),
    };
    let integ = child.suite.integ.map(|i| match i {
        Integ::HmacSha256_128 => esp::Integrity::HmacSha256_128,
        Integ::HmacSha384_192 => esp::Integrity::HmacSha384_192,
        Integ::HmacSha512_256 => esp::Integrity::HmacSha512_256,
    });
    (cipher, integ)
}

fn run(a: &[String]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let hub: SocketAddr = format!("{}:500", a[1]).parse().map_err(|e| err(&e))?;
    let (spoofed, legit, dst): (Ipv4Addr, Ipv4Addr, Ipv4Addr) = (
        a[6].parse().map_err(|e| err(&e))?,
        a[7].parse().map_err(|e| err(&e))?,
        a[8].parse().map_err(|e| err(&e))?,
    );
    let count: u16 = a[9].parse().map_err(|e| err(&e))?;
    let mut seed = [0u8; 32];
    seed[0] = 0xee;
    let mut ep = Endpoint::new(Config::new(
        pki::Identity::parse(&a[2]).map_err(|e| err(&e))?,
        seed,
    ));
    ep.set_peer(PeerConfig {
        name: "hub".into(),
        remote_id: pki::Identity::parse("hub.example").map_err(|e| err(&e))?,
        auth: ike::PeerAuth::Psk(zeroize::Zeroizing::new(a[3].as_bytes().to_vec())),
        local_ts: parse_subnets(&a[4]).map_err(|e| err(&e))?,
        remote_ts: parse_subnets(&a[5]).map_err(|e| err(&e))?,
        remote_addr: Some(hub),
        ike: ProposalSet::default_for(Protocol::Ike),
        esp: ProposalSet::default_for(Protocol::Esp),
        lifetimes: Lifetimes::default(),
        ke_upgrade: true,
    })
    .map_err(|e| err(&e))?;
    let s500 = UdpSocket::bind("0.0.0.0:500").map_err(|e| err(&e))?;
    let s4500 = UdpSocket::bind("0.0.0.0:4500").map_err(|e| err(&e))?;
    for s in [&s500, &s4500] {
        s.set_nonblocking(true).map_err(|e| err(&e))?;
    }
    ep.initiate(Instant::now(), "hub").map_err(|e| err(&e))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 65535];
    let child = loop {
        while let Some(t) = ep.poll_transmit() {
            let s = if t.local.port() == 4500 {
                &s4500
            } else {
                &s500
            };
            s.send_to(&t.contents, t.remote).map_err(|e| err(&e))?;
        }
        if let Some(Event::ChildSaUp { child, .. }) =
            std::iter::from_fn(|| ep.poll_event()).find(|e| matches!(e, Event::ChildSaUp { .. }))
        {
            break child;
        }
        if Instant::now() > deadline {
            return Err("no Child SA".into());
        }
        for s in [&s500, &s4500] {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let local = s.local_addr().map_err(|e| err(&e))?;
                ep.handle_datagram(Instant::now(), from, local, &buf[..n]);
            }
        }
        ep.handle_timeout(Instant::now());
        std::thread::sleep(Duration::from_millis(5));
    };
    // Seal by hand, skipping the selector check an honest data plane makes.
    let (cipher, integ) = esp_suite(&child);
    let crypto = esp::packet::SaCrypto::new(
        cipher,
        integ,
        &child.keys.encr_out,
        &child.keys.integ_out,
        child.suite.esn,
    )
    .map_err(|e| err(&e))?;
    let send = |src: Ipv4Addr, seq: u16| -> Result<(), String> {
        let inner = icmp_echo(src, dst, seq);
        let mut pkt = vec![0u8; esp::packet::HEADROOM + inner.len() + esp::packet::TAILROOM];
        let at = esp::packet::HEADROOM;
        pkt[at..at + inner.len()].copy_from_slice(&inner);
        let range = crypto
            .seal(
                &mut pkt,
                at..at + inner.len(),
                child.spi_out,
                u64::from(seq),
                4,
                &mut |iv| {
                    iv.fill(seq as u8);
                    Ok(())
                },
            )
            .map_err(|e| format!("{e:?}"))?;
        s4500
            .send_to(&pkt[range], child.remote)
            .map_err(|e| err(&e))?;
        Ok(())
    };
    for seq in 1..=count {
        send(spoofed, seq)?;
    }
    send(legit, count + 1)?;
    println!("{{\"spoofed\":{count},\"legit\":1}}");
    Ok(())
}

fn main() -> ExitCode {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 10 {
        eprintln!(
            "usage: rk-evil HUB_ADDR ID PSK LOCAL_TS REMOTE_TS SPOOFED_SRC LEGIT_SRC DST COUNT"
        );
        return ExitCode::from(2);
    }
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rk-evil: {e}");
            ExitCode::FAILURE
        }
    }
}
