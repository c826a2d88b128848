//! Routes through rtnetlink (RFC 3549): a facility's prefixes point at the
//! TUN device while its Child SA is up.

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTPROT_RENKEI: u8 = 4; // RTPROT_STATIC: routes an administrator set.
/// `RTAX_MTU` from `<linux/rtnetlink.h>` (not in the libc crate).
const RTAX_MTU: u16 = 2;

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
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(
        &(flags | libc::NLM_F_REQUEST as u16 | libc::NLM_F_ACK as u16).to_ne_bytes(),
    );
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it
    msg.extend_from_slice(&body);

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
    let mut reply = [0u8; 1024];
    // SAFETY: reply is a writable buffer of the length passed.
    let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // struct nlmsghdr (16) then, for NLMSG_ERROR, an int error code.
    if n < 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
    }
    Ok(())
}

/// Adds (or replaces) `dst/prefix dev <ifindex> [src <src>] [mtu <mtu>]`
/// in the main table.
pub fn add_route(
    dst: IpAddr,
    prefix: u8,
    ifindex: u32,
    src: Option<IpAddr>,
    mtu: Option<u32>,
) -> io::Result<()> {
    request(
        libc::RTM_NEWROUTE,
        (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16,
        dst,
        prefix,
        ifindex,
        src,
        mtu,
    )
}

/// Deletes `dst/prefix dev <ifindex>`; a route that is already gone is fine.
pub fn delete_route(dst: IpAddr, prefix: u8, ifindex: u32) -> io::Result<()> {
    match request(libc::RTM_DELROUTE, 0, dst, prefix, ifindex, None, None) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}
