//! Everything that talks to the kernel directly: the TUN device, routes
//! over rtnetlink, batched UDP, and the host's addresses. All of the crate's `unsafe`
//! lives here, each block with the reason it is sound.
//!
//! Written by hand because each piece is a handful of well-known system
//! calls; the crates that wrap them bring async runtimes or far larger
//! surfaces than the three operations the hub needs.
#![allow(unsafe_code)]

mod route;
mod tun;
pub mod udp;

pub use route::{
    add_route, delete_route, interface_name, route_to, routes, set_route_mtu, Route, RouteWatch,
    RTPROT_RENKEI,
};
pub use tun::{Tun, MAX_QUEUES as MAX_TUN_QUEUES};

use std::io;
use std::net::IpAddr;

/// Lets SIGPIPE end the process again, as it ends any Unix command whose
/// reader went away (`renkei peer list | head -3`). Rust starts with it
/// ignored, so a write to a closed pipe fails with EPIPE and `println!`
/// panics. Only for the short-lived operator commands: the daemon keeps it
/// ignored, so a departed control-socket client cannot kill it.
pub fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler of ours; it only
    // restores the kernel's default action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The host's interface addresses (for choosing a route's source address).
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; on success we own
    // the list until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family field is
            // valid; we read the concrete type that family names.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family AF_INET means the storage is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ));
            } else if family == libc::AF_INET6 {
                // SAFETY: family AF_INET6 means the storage is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Waits until `fd` is readable or `timeout_ms` passes; true if readable.
pub(crate) fn poll_readable(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}
