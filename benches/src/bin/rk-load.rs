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
//!
//! `--restore SECS` measures how fast a hub that was killed and started
//! again brings the facilities back by initiating to them (issue #17):
//! each facility then has a UDP port of its own (`--port-base P`, facility
//! `i` at `P + i`), from which it initiates over NAT-T, so the hub sees
//! each one at its own address and port as if behind a NAT. Once all are up
//! it prints `{"ready":…}` and answers, as a responder, the IKE SAs the
//! restarted hub initiates; when every facility has a new Child SA, or
//! after SECS, it prints one JSON line with the unix times of the first and
//! last new Child SA and how many came back (the caller knows when it
//! killed the hub).

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
    restore: u64,
    port_base: u16,
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
        restore: 0,
        port_base: 20000,
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
            "--restore" => {
                out.restore = value()?.parse().map_err(|e| format!("--restore: {e}"))?;
            }
            "--port-base" => {
                out.port_base = value()?.parse().map_err(|e| format!("--port-base: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.psk.is_none() == out.ca.is_none() {
        return Err("give exactly one of --psk FILE and --ca DIR".into());
    }
    if out.count == 0 || out.count > 65_000 || out.window == 0 {
        return Err("--count must be 1..=65000 and --window at least 1".into());
    }
    if out.restore > 0 && usize::from(out.port_base) + out.count > 65_536 {
        return Err("--port-base + --count must stay below 65536".into());
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
    if args.restore > 0 {
        // A port of its own, as a NAT would give it.
        cfg.natt_port = args.port_base + i as u16;
    }
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

fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `--restore`: every facility on its own port, up; then the IKE SAs the
/// restarted hub initiates, answered and timed.
fn run_restore(args: &Args) -> Result<String, String> {
    let unix = unix_secs() as i64;
    let certs = match &args.ca {
        Some(dir) => Some(issue_certs(dir, args.count, unix - 60)?),
        None => None,
    };
    let hub = SocketAddr::new(args.hub, 4500);
    let mut socks = Vec::with_capacity(args.count);
    let mut endpoints = Vec::with_capacity(args.count);
    let now = Instant::now();
    for i in 0..args.count {
        let port = args.port_base + i as u16;
        let s = UdpSocket::bind(SocketAddr::new(args.bind, port))
            .map_err(|e| format!("bind {port}: {e} (raise `ulimit -n` for many facilities)"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(s);
        endpoints.push(facility(i, args, certs.as_ref(), now, unix)?);
    }
    let mut buf = vec![0u8; 65_535];
    // Which phase each facility is in: 0 connecting, 1 up (first SA),
    // 2 back (a Child SA of an IKE SA the hub initiated).
    let mut phase = vec![0u8; args.count];
    let (mut started, mut up, mut back, mut failed) = (0usize, 0usize, 0usize, 0usize);
    let (mut first_back, mut last_back) = (None::<f64>, None::<f64>);
    let mut ready_at: Option<Instant> = None;
    let setup_deadline = Instant::now() + Duration::from_secs(60 + args.count as u64 / 20);
    let pump = |ep: &mut Endpoint, s: &UdpSocket| {
        while let Some(t) = ep.poll_transmit() {
            let _ = s.send_to(&t.contents, t.remote);
        }
    };
    loop {
        let now = Instant::now();
        match ready_at {
            None if now > setup_deadline => {
                return Err(format!("only {up} of {} facilities came up", args.count))
            }
            Some(r) if now > r + Duration::from_secs(args.restore) => break,
            _ => {}
        }
        if back == args.count {
            break;
        }
        while started < args.count && started - up - failed < args.window {
            let ep = &mut endpoints[started];
            ep.initiate_natt(now, "hub", hub)
                .map_err(|e| e.to_string())?;
            pump(ep, &socks[started]);
            started += 1;
        }
        let mut idle = true;
        for i in 0..args.count {
            let s = &socks[i];
            loop {
                let (n, from) = match s.recv_from(&mut buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("receive: {e}")),
                };
                idle = false;
                let local = s.local_addr().map_err(|e| e.to_string())?;
                let ep = &mut endpoints[i];
                ep.handle_datagram(Instant::now(), from, local, &buf[..n]);
                pump(ep, s);
                while let Some(e) = ep.poll_event() {
                    match e {
                        Event::ChildSaUp {
                            rekey_of: None,
                            answered,
                            ..
                        } => {
                            if phase[i] == 0 {
                                phase[i] = 1;
                                up += 1;
                            } else if phase[i] == 1 && answered && ready_at.is_some() {
                                // The hub initiated this one.
                                phase[i] = 2;
                                back += 1;
                                let t = unix_secs();
                                first_back.get_or_insert(t);
                                last_back = Some(t);
                            }
                        }
                        Event::IkeSaDown { .. } | Event::Refused { .. } if phase[i] == 0 => {
                            failed += 1;
                            phase[i] = 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        if ready_at.is_none() && up + failed == args.count && started == args.count {
            if failed > 0 {
                return Err(format!("{failed} facilities could not connect"));
            }
            ready_at = Some(Instant::now());
            println!("{{\"ready\":{},\"unix\":{:.3}}}", up, unix_secs());
        }
        if idle {
            let now = Instant::now();
            for i in 0..args.count {
                let ep = &mut endpoints[i];
                if ep.poll_timeout().is_some_and(|t| t <= now) {
                    ep.handle_timeout(now);
                    pump(ep, &socks[i]);
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |t| format!("{t:.3}"));
    Ok(format!(
        "{{\"count\":{},\"back\":{},\"first_back_unix\":{},\"all_back_unix\":{}}}",
        args.count,
        back,
        opt(first_back),
        if back == args.count {
            opt(last_back)
        } else {
            "null".into()
        }
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rk-load: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.restore > 0 {
        run_restore(&args)
    } else {
        run(&args)
    };
    match result {
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
