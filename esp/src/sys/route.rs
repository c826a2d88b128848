//! Routes through rtnetlink (RFC 3549): a facility's prefixes point at the
//! TUN device while its Child SA is up, and the routing table can be read.
//!
//! Route ownership: every route the hub makes carries its own routing
//! protocol number, [`RTPROT_RENKEI`] (`ip route show proto 157`), and is
//! created with `NLM_F_EXCL`, so it never replaces a route someone else
//! made. Deleting names that protocol and the TUN device; the kernel
//! deletes a route only when both match, so the hub can only ever remove
//! routes it made itself.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The routing protocol number (`rtm_protocol`) of the routes the hub
/// makes: not one of the numbers iproute2 names in `rt_protos` (`static`,
/// `kernel`, `boot`, routing daemons), so routes made by `ip route`, the
/// kernel or a routing daemon are never taken for the hub's.
pub const RTPROT_RENKEI: u8 = 157;
/// `RTAX_MTU` from `<linux/rtnetlink.h>` (not in the libc crate).
const RTAX_MTU: u16 = 2;
/// `RTA_TABLE`: the 32-bit table id of a route.
const RTA_TABLE: u16 = 15;

fn nla(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = (4 + data.len()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A netlink message: header then `body`.
fn message(msg_type: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    msg.extend_from_slice(body);
    msg
}

/// A NETLINK_ROUTE socket with `msg` sent to the kernel.
fn send(msg: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain old data; all-zero addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg is a valid buffer of msg.len() bytes, the address a valid
    // sockaddr_nl of the size passed.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Reads one datagram of netlink messages into `buf`; its length.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a writable buffer of the length passed.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "short netlink reply")
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages of one netlink datagram: (type, payload).
fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(b, 0)? as usize;
        let kind = u16_at(b, 4)?;
        if len < 16 || len > b.len() {
            return None;
        }
        let payload = &b[16..len];
        b = b.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

/// The error code of an NLMSG_ERROR payload (0: an acknowledgement).
fn error_code(payload: &[u8]) -> io::Result<()> {
    let code = u32_at(payload, 0).ok_or_else(short)? as i32;
    if code != 0 {
        return Err(io::Error::from_raw_os_error(-code));
    }
    Ok(())
}

/// Sends a route request and waits for the kernel's acknowledgement.
#[allow(clippy::too_many_arguments)]
fn request(
    msg_type: u16,
    flags: u16,
    dst: IpAddr,
    prefix: u8,
    ifindex: u32,
    src: Option<IpAddr>,
    mtu: Option<u32>,
) -> io::Result<()> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    } as u8;
    let mut body = Vec::with_capacity(64);
    // struct rtmsg
    body.extend_from_slice(&[
        family,
        prefix,
        0, // src_len
        0, // tos
        libc::RT_TABLE_MAIN,
        RTPROT_RENKEI,
        libc::RT_SCOPE_LINK,
        libc::RTN_UNICAST,
    ]);
    body.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    nla(&mut body, libc::RTA_DST, &addr_bytes(dst));
    nla(&mut body, libc::RTA_OIF, &ifindex.to_ne_bytes());
    if let Some(src) = src {
        nla(&mut body, libc::RTA_PREFSRC, &addr_bytes(src));
    }
    if let Some(mtu) = mtu {
        // RTA_METRICS holds nested attributes; RTAX_MTU is the route's MTU
        // (`ip route … mtu N`): the kernel fragments or sends ICMP for
        // larger packets before they reach the TUN device, and local TCP
        // derives its MSS from it.
        let mut metrics = Vec::with_capacity(8);
        nla(&mut metrics, RTAX_MTU, &mtu.to_ne_bytes());
        nla(&mut body, libc::RTA_METRICS, &metrics);
    }
    let sock = send(&message(msg_type, flags | libc::NLM_F_ACK as u16, &body))?;
    let mut reply = [0u8; 1024];
    let n = receive(&sock, &mut reply)?;
    let (kind, payload) = messages(&reply[..n]).next().ok_or_else(short)?;
    if kind == libc::NLMSG_ERROR as u16 {
        error_code(payload)?;
    }
    Ok(())
}

/// Adds `dst/prefix dev <ifindex> [src <src>] [mtu <mtu>]` to the main
/// table as one of the hub's routes ([`RTPROT_RENKEI`]). Never replaces a
/// route: if one for the same prefix (and metric) exists, whoever made it,
/// the kernel refuses with `EEXIST` and nothing changes.
pub fn add_route(
    dst: IpAddr,
    prefix: u8,
    ifindex: u32,
    src: Option<IpAddr>,
    mtu: Option<u32>,
) -> io::Result<()> {
    request(
        libc::RTM_NEWROUTE,
        (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16,
        dst,
        prefix,
        ifindex,
        src,
        mtu,
    )
}

/// Gives one of the hub's own routes (made by [`add_route`] on the TUN
/// device `ifindex`) a new MTU. The route the kernel uses for `dst` is
/// looked up first: when it is not that route of the hub's (someone
/// deleted it and made their own, or routes part of it elsewhere), it is
/// left alone and `PermissionDenied` returned.
pub fn set_route_mtu(
    dst: IpAddr,
    prefix: u8,
    ifindex: u32,
    src: Option<IpAddr>,
    mtu: u32,
) -> io::Result<()> {
    let ours = route_to(dst)?.is_some_and(|r| {
        r.dst == dst
            && r.prefix == prefix
            && r.table == u32::from(libc::RT_TABLE_MAIN)
            && r.is_renkei_on(ifindex)
    });
    if !ours {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{dst}/{prefix} is not the hub's route on its TUN device"),
        ));
    }
    request(
        libc::RTM_NEWROUTE,
        libc::NLM_F_REPLACE as u16,
        dst,
        prefix,
        ifindex,
        src,
        Some(mtu),
    )
}

/// Deletes the hub's route `dst/prefix dev <ifindex>`: the request names
/// [`RTPROT_RENKEI`] and the device, and the kernel deletes only a route
/// matching both, so a route someone else made is never touched. A route
/// that is already gone is fine.
pub fn delete_route(dst: IpAddr, prefix: u8, ifindex: u32) -> io::Result<()> {
    match request(libc::RTM_DELROUTE, 0, dst, prefix, ifindex, None, None) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

/// One route of the kernel's routing tables, as `ip route show table all`
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network (`0.0.0.0`/`::` with prefix 0 for a default).
    pub dst: IpAddr,
    pub prefix: u8,
    /// Routing table (254 is `main`, 255 `local`).
    pub table: u32,
    /// Who made it (`rtm_protocol`: 2 kernel, 3 boot, 4 static, …).
    pub protocol: u8,
    /// `rtm_scope` (253 `link`: a directly connected network).
    pub scope: u8,
    /// `rtm_type` (1 unicast, 2 local, …).
    pub kind: u8,
    /// Output device, if any.
    pub oif: Option<u32>,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// Whether this is a route the hub makes, on the TUN device `ifindex`.
    pub fn is_renkei_on(&self, ifindex: u32) -> bool {
        self.protocol == RTPROT_RENKEI && self.oif == Some(ifindex)
    }

    /// A directly connected network: a unicast route with a device and no
    /// next hop (what the kernel adds for an interface address; a
    /// multipath route names neither at the top).
    pub fn is_connected(&self) -> bool {
        self.kind == libc::RTN_UNICAST && self.gateway.is_none() && self.oif.is_some()
    }
}

fn ip_from(family: u8, b: &[u8]) -> Option<IpAddr> {
    match i32::from(family) {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(b.get(..4)?).ok()?)),
        libc::AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(b.get(..16)?).ok()?)),
        _ => None,
    }
}

/// One RTM_NEWROUTE payload (struct rtmsg and attributes).
fn parse_route(p: &[u8]) -> Option<Route> {
    let rtm = p.get(..12)?;
    let (family, prefix) = (rtm[0], rtm[1]);
    let mut route = Route {
        dst: match i32::from(family) {
            libc::AF_INET => IpAddr::from([0u8; 4]),
            libc::AF_INET6 => IpAddr::from([0u8; 16]),
            _ => return None,
        },
        prefix,
        table: u32::from(rtm[4]),
        protocol: rtm[5],
        scope: rtm[6],
        kind: rtm[7],
        oif: None,
        gateway: None,
    };
    let mut attrs = &p[12..];
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)? & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match kind {
            libc::RTA_DST => route.dst = ip_from(family, data)?,
            libc::RTA_OIF => route.oif = u32_at(data, 0),
            libc::RTA_GATEWAY => route.gateway = ip_from(family, data),
            RTA_TABLE => route.table = u32_at(data, 0)?,
            _ => {}
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Some(route)
}

/// `RTM_F_FIB_MATCH` from `<linux/rtnetlink.h>`: a lookup answers with the
/// routing-table entry that matched, not the resulting next hop.
const RTM_F_FIB_MATCH: u32 = 0x2000;

/// The route the kernel uses for `dst` (`ip route get fibmatch DST`), one
/// lookup however large the table; `None` when nothing routes it.
pub fn route_to(dst: IpAddr) -> io::Result<Option<Route>> {
    let (family, width) = if dst.is_ipv4() {
        (libc::AF_INET, 32)
    } else {
        (libc::AF_INET6, 128)
    };
    let mut body = vec![family as u8, width, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&RTM_F_FIB_MATCH.to_ne_bytes());
    nla(&mut body, libc::RTA_DST, &addr_bytes(dst));
    let sock = send(&message(libc::RTM_GETROUTE, 0, &body))?;
    let mut reply = vec![0u8; 4096];
    let n = receive(&sock, &mut reply)?;
    let (kind, payload) = messages(&reply[..n]).next().ok_or_else(short)?;
    if kind == libc::NLMSG_ERROR as u16 {
        return match error_code(payload) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(None),
        };
    }
    Ok(parse_route(payload))
}

/// Every route of every table, both families (an RTM_GETROUTE dump).
pub fn routes() -> io::Result<Vec<Route>> {
    let mut body = vec![0u8; 12]; // struct rtmsg, AF_UNSPEC: both families
    body[0] = libc::AF_UNSPEC as u8;
    let sock = send(&message(libc::RTM_GETROUTE, libc::NLM_F_DUMP as u16, &body))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = receive(&sock, &mut buf)?;
        if n == 0 {
            return Err(short());
        }
        for (kind, payload) in messages(&buf[..n]) {
            match kind {
                k if k == libc::NLMSG_DONE as u16 => return Ok(out),
                k if k == libc::NLMSG_ERROR as u16 => {
                    error_code(payload)?;
                }
                k if k == libc::RTM_NEWROUTE => out.extend(parse_route(payload)),
                _ => {}
            }
        }
    }
}

/// The name of interface `ifindex` (`eth0`), if it has one.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires; the
    // result is checked before the buffer is read.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Multicast groups (`RTMGRP_*`) of the changes [`RouteWatch`] follows:
/// links, IPv4 and IPv6 addresses and routes.
const WATCHED_GROUPS: u32 = 0x1 | 0x10 | 0x40 | 0x100 | 0x400;

/// Follows changes of the host's links, addresses and routes (rtnetlink
/// notifications), so that what was read of them is read again only when
/// something other than the hub's own routes changed.
#[derive(Debug)]
pub struct RouteWatch {
    sock: OwnedFd,
    ifindex: u32,
}

impl RouteWatch {
    /// Subscribes; the hub's own routes are those of [`RTPROT_RENKEI`] on
    /// the TUN device `ifindex`.
    pub fn new(ifindex: u32) -> io::Result<RouteWatch> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = WATCHED_GROUPS;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RouteWatch { sock, ifindex })
    }

    /// Reads every pending notification; true if one was about anything
    /// but the hub's own routes, or some were lost (the socket overran).
    pub fn changed(&self) -> bool {
        let mut changed = false;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // SAFETY: buf is a writable buffer of the length passed.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return changed,
                    // ENOBUFS: notifications were lost; anything else: the
                    // socket cannot be trusted to tell. Either way, read again.
                    Some(libc::ENOBUFS) => {
                        changed = true;
                        continue;
                    }
                    _ => return true,
                }
            }
            if n == 0 {
                return changed;
            }
            for (kind, payload) in messages(&buf[..n as usize]) {
                let ours = (kind == libc::RTM_NEWROUTE || kind == libc::RTM_DELROUTE)
                    && parse_route(payload).is_some_and(|r| r.is_renkei_on(self.ifindex));
                changed |= !ours;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_messages_are_parsed_within_bounds() {
        // 10.1.0.0/24 via 192.0.2.254 dev 3, table main, proto boot.
        let mut p = vec![libc::AF_INET as u8, 24, 0, 0, 254, 3, 0, 1];
        p.extend_from_slice(&0u32.to_ne_bytes());
        nla(&mut p, libc::RTA_DST, &[10, 1, 0, 0]);
        nla(&mut p, libc::RTA_GATEWAY, &[192, 0, 2, 254]);
        nla(&mut p, libc::RTA_OIF, &3u32.to_ne_bytes());
        let r = parse_route(&p).unwrap();
        assert_eq!(r.dst, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            (r.prefix, r.table, r.protocol, r.oif),
            (24, 254, 3, Some(3))
        );
        assert!(!r.is_connected() && !r.is_renkei_on(3));
        // Every truncation is refused or parsed without reading past the end.
        for cut in 0..p.len() {
            let _ = parse_route(&p[..cut]);
        }
        let msg = message(libc::RTM_NEWROUTE, 0, &p);
        for cut in 0..msg.len() {
            assert!(messages(&msg[..cut]).next().is_none());
        }
        assert_eq!(messages(&msg).count(), 1);
    }
}
