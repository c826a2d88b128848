//! A TCP transfer with an end-to-end SHA-256, for the interop tests.
//!
//! ```text
//! rk-xfer recv LISTEN_ADDR:PORT            # prints {"bytes":N,"sha256":"…"} after EOF
//! rk-xfer send SRC_ADDR DST_ADDR:PORT BYTES [RATE] # prints {"bytes":N,"sha256":"…"}
//! ```
//! The sender's data is a deterministic pseudo-random stream, so a corrupted,
//! truncated or reordered byte anywhere changes the digest.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn usage() -> ExitCode {
    eprintln!("usage: rk-xfer recv ADDR:PORT | rk-xfer send SRC_ADDR DST_ADDR:PORT BYTES [BYTES_PER_SECOND]");
    ExitCode::from(2)
}

fn report(bytes: u64, h: Sha256) {
    println!(
        "{{\"bytes\":{bytes},\"sha256\":\"{}\"}}",
        hex::encode(h.finalize())
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("recv") if args.len() == 3 => {
            let Ok(addr) = args[2].parse::<SocketAddr>() else {
                return usage();
            };
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("rk-xfer: bind {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (mut s, _) = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("rk-xfer: accept: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 65536];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        h.update(&buf[..n]);
                        total += n as u64;
                    }
                    Err(e) => {
                        eprintln!("rk-xfer: read: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            report(total, h);
            ExitCode::SUCCESS
        }
        Some("send") if args.len() == 5 || args.len() == 6 => {
            let (Ok(src), Ok(dst), Ok(bytes)) = (
                args[2].parse::<std::net::IpAddr>(),
                args[3].parse::<SocketAddr>(),
                args[4].parse::<u64>(),
            ) else {
                return usage();
            };
            let rate = match args.get(5).map(|r| r.parse::<u64>()) {
                None => None,
                Some(Ok(r)) if r > 0 => Some(r),
                Some(_) => return usage(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                let sock = if dst.is_ipv4() {
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                } else {
                    socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)
                };
                let attempt = sock.and_then(|s| {
                    s.bind(&SocketAddr::new(src, 0).into())?;
                    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
                    Ok(TcpStream::from(s))
                });
                match attempt {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("rk-xfer: connect {dst}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        eprintln!("rk-xfer: connect {dst}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            // A stalled tunnel fails the transfer instead of hanging it.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
            let started = Instant::now();
            let mut h = Sha256::new();
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut buf = vec![0u8; 65536];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                for chunk in buf[..n].chunks_mut(8) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
                }
                if let Err(e) = stream.write_all(&buf[..n]) {
                    eprintln!("rk-xfer: write: {e}");
                    return ExitCode::FAILURE;
                }
                h.update(&buf[..n]);
                left -= n as u64;
                if let Some(rate) = rate {
                    // Pace to the rate: sleep until this many bytes are due.
                    let due = Duration::from_secs_f64((bytes - left) as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // Wait for the receiver to close, so the data surely arrived.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = stream.read(&mut [0u8; 1]);
            report(bytes, h);
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
