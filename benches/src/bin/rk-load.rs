//! IKE load generator: many facilities, each with its own identity, bring
//! up an IKE SA with its first Child SA against one responder (a renkei
//! hub or strongSwan), as fast as the responder lets them, with at most
//! `--window` handshakes in flight. Built from renkei's own `ike` crate as
//! the initiator; prints one JSON line with the rate.
//!
//! ```text
//! rk-load --hub ADDR --count N [--window W] [--bind ADDR]
//!         (--psk FILE | --ca DIR) [--hold SECS]
//! ```
//!
//! Facility `i` is `f{i}.load.example` with the selector
//! `2001:db8:1::{i:x}/128` behind it and asks for `2001:db8:ffff::/64`
//! behind the hub. With `--ca DIR` (a hub's `ca/` directory) each facility
//! gets an ECDSA P-256 certificate issued in-process by that CA, before the
//! clock starts. `--hold SECS` keeps every SA up (answering liveness
//! checks) that long after the last one came up, for memory measurements.

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::parse_subnets;
use ike::{Config, Credentials, Endpoint, Event, Lifetimes, PeerAuth, PeerConfig};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    hub: IpAddr,
    count: usize,
    window: usize,
    bind: IpAddr,
    psk: Option<Vec<u8>>,
    ca: Option<std::path::PathBuf>,
    hold: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let mut out = Args {
        hub: "192.0.2.1".parse().map_err(|e| format!("{e}"))?,
        count: 100,
        window: 64,
        bind: "0.0.0.0".parse().map_err(|e| format!("{e}"))?,
        psk: None,
        ca: None,
        hold: 0,
    };
    while let Some(flag) = a.next() {
        let mut value = || a.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--hub" => out.hub = value()?.parse().map_err(|e| format!("--hub: {e}"))?,
            "--count" => out.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--window" => out.window = value()?.parse().map_err(|e| format!("--window: {e}"))?,
            "--bind" => out.bind = value()?.parse().map_err(|e| format!("--bind: {e}"))?,
            "--hold" => out.hold = value()?.parse().map_err(|e| format!("--hold: {e}"))?,
            "--psk" => {
                let text = std::fs::read_to_string(value()?).map_err(|e| format!("--psk: {e}"))?;
                out.psk = Some(text.trim_end_matches('\n').as_bytes().to_vec());
            }
            "--ca" => out.ca = Some(value()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.psk.is_none() == out.ca.is_none() {
        return Err("give exactly one of --psk FILE and --ca DIR".into());
    }
    if out.count == 0 || out.count > 65_000 || out.window == 0 {
        return Err("--count must be 1..=65000 and --window at least 1".into());
    }
    Ok(out)
}

/// Per-facility certificate credentials and the trust store for the hub.
struct Certs {
    creds: Vec<Arc<Credentials>>,
    trust: Arc<pki::verify::TrustStore>,
}

fn issue_certs(dir: &std::path::Path, count: usize, now: i64) -> Result<Certs, String> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{f}: {e}"));
    let ca = pki::ca::Ca::load(&read("ca.key")?, &read("ca.pem")?).map_err(|e| e.to_string())?;
    let mut creds = Vec::with_capacity(count);
    for i in 0..count {
        let id = pki::Identity::parse(&format!("f{i}.load.example")).map_err(|e| e.to_string())?;
        let c = ca
            .issue(&id, pki::ca::KeyKind::EcdsaP256, now, 30)
            .map_err(|e| e.to_string())?;
        creds.push(Arc::new(Credentials {
            key: pki::sig::SigningKey::from_pkcs8(&c.key_der).map_err(|e| e.to_string())?,
            cert_der: c.cert_der,
        }));
    }
    let trust = pki::verify::TrustStore::new(ca.cert_der(), []).map_err(|e| e.to_string())?;
    Ok(Certs {
        creds,
        trust: Arc::new(trust),
    })
}

fn facility(
    i: usize,
    args: &Args,
    certs: Option<&Certs>,
    now: Instant,
    unix: i64,
) -> Result<Endpoint, String> {
    let id = pki::Identity::parse(&format!("f{i}.load.example")).map_err(|e| e.to_string())?;
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| "no randomness".to_string())?;
    let mut cfg = Config::new(id, seed);
    cfg.retransmit_timeout = Duration::from_secs(2);
    let auth = match certs {
        Some(c) => {
            cfg.credentials = Some(c.creds[i].clone());
            cfg.trust = Some(c.trust.clone());
            PeerAuth::Cert
        }
        None => PeerAuth::Psk(zeroize::Zeroizing::new(
            args.psk.clone().unwrap_or_default(),
        )),
    };
    let mut ep = Endpoint::new(cfg);
    ep.set_wall_clock(now, unix);
    ep.set_peer(PeerConfig {
        name: "hub".into(),
        remote_id: pki::Identity::parse("hub.example").map_err(|e| e.to_string())?,
        auth,
        local_ts: parse_subnets(&format!("2001:db8:1::{i:x}/128")).map_err(|e| e.to_string())?,
        remote_ts: parse_subnets("2001:db8:ffff::/64").map_err(|e| e.to_string())?,
        remote_addr: Some(SocketAddr::new(args.hub, 500)),
        ike: ProposalSet::parse("aes256gcm16-prfsha256-ecp256", Protocol::Ike, false)
            .map_err(|e| e.to_string())?,
        esp: ProposalSet::parse("aes256gcm16", Protocol::Esp, false).map_err(|e| e.to_string())?,
        lifetimes: Lifetimes {
            dpd: Duration::from_secs(600),
            ..Lifetimes::default()
        },
        ke_upgrade: true,
    })
    .map_err(|e| e.to_string())?;
    Ok(ep)
}

fn run(args: &Args) -> Result<String, String> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let certs = match &args.ca {
        Some(dir) => Some(issue_certs(dir, args.count, unix - 60)?),
        None => None,
    };
    let s500 =
        UdpSocket::bind(SocketAddr::new(args.bind, 500)).map_err(|e| format!("bind 500: {e}"))?;
    let s4500 =
        UdpSocket::bind(SocketAddr::new(args.bind, 4500)).map_err(|e| format!("bind 4500: {e}"))?;
    for s in [&s500, &s4500] {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(args.count);
    let mut by_spi: HashMap<[u8; 8], usize> = HashMap::new();
    let mut up = vec![false; args.count];
    let (mut started, mut done, mut failed) = (0usize, 0usize, 0usize);
    let mut first_up = None;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(60 + args.count as u64 / 20);
    let mut buf = vec![0u8; 65_535];
    let send = |ep: &mut Endpoint, i: usize, by_spi: &mut HashMap<[u8; 8], usize>| {
        while let Some(t) = ep.poll_transmit() {
            let (s, data) = if t.local.port() == 4500 {
                (&s4500, &t.contents)
            } else {
                (&s500, &t.contents)
            };
            let ike = if t.local.port() == 4500 {
                data.get(4..)
            } else {
                Some(&data[..])
            };
            if let Some(spi) = ike.and_then(|d| d.get(..8)) {
                by_spi
                    .entry(spi.try_into().unwrap_or_default())
                    .or_insert(i);
            }
            let _ = s.send_to(data, t.remote);
        }
    };
    while done + failed < args.count {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        // Keep `window` handshakes in flight.
        while started < args.count && started - done - failed < args.window {
            let mut ep = facility(started, args, certs.as_ref(), now, unix)?;
            ep.initiate(now, "hub").map_err(|e| e.to_string())?;
            send(&mut ep, started, &mut by_spi);
            endpoints.push(ep);
            started += 1;
        }
        let mut idle = true;
        for (s, port) in [(&s500, 500u16), (&s4500, 4500)] {
            loop {
                let (n, from) = match s.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("receive: {e}")),
                };
                idle = false;
                let ike = if port == 4500 {
                    buf.get(4..n)
                } else {
                    buf.get(..n)
                };
                let Some(i) = ike
                    .and_then(|d| d.get(..8))
                    .and_then(|spi| by_spi.get(spi).copied())
                else {
                    continue;
                };
                let local = s.local_addr().map_err(|e| e.to_string())?;
                let ep = &mut endpoints[i];
                ep.handle_datagram(Instant::now(), from, local, &buf[..n]);
                send(ep, i, &mut by_spi);
                while let Some(e) = ep.poll_event() {
                    match e {
                        Event::ChildSaUp { .. } if !up[i] => {
                            up[i] = true;
                            done += 1;
                            first_up.get_or_insert_with(Instant::now);
                        }
                        Event::IkeSaDown { .. } | Event::Refused { .. } if !up[i] => {
                            failed += 1;
                            up[i] = true; // counted
                        }
                        _ => {}
                    }
                }
            }
        }
        if idle {
            let now = Instant::now();
            for (i, ep) in endpoints.iter_mut().enumerate() {
                if ep.poll_timeout().is_some_and(|t| t <= now) {
                    ep.handle_timeout(now);
                    send(ep, i, &mut by_spi);
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let result = format!(
        "{{\"auth\":\"{}\",\"count\":{},\"up\":{},\"failed\":{},\"timed_out\":{},\"seconds\":{:.3},\"per_second\":{:.1},\"window\":{}}}",
        if args.ca.is_some() { "ecdsa-p256-cert" } else { "psk" },
        args.count,
        done,
        failed,
        args.count - done - failed,
        elapsed,
        done as f64 / elapsed,
        args.window
    );
    if args.hold > 0 {
        println!("{result}");
        let until = Instant::now() + Duration::from_secs(args.hold);
        while Instant::now() < until {
            for (s, port) in [(&s500, 500u16), (&s4500, 4500)] {
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let ike = if port == 4500 {
                        buf.get(4..n)
                    } else {
                        buf.get(..n)
                    };
                    if let Some(i) = ike
                        .and_then(|d| d.get(..8))
                        .and_then(|spi| by_spi.get(spi).copied())
                    {
                        let local = s.local_addr().map_err(|e| e.to_string())?;
                        endpoints[i].handle_datagram(Instant::now(), from, local, &buf[..n]);
                        send(&mut endpoints[i], i, &mut by_spi);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        return Ok(String::new());
    }
    Ok(result)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rk-load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            if !line.is_empty() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rk-load: {e}");
            ExitCode::FAILURE
        }
    }
}
