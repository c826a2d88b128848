//! Batched UDP on the NAT-T sockets: segmentation offload (UDP GSO,
//! `UDP_SEGMENT`, Linux 4.18+) to send many ESP packets to one facility in
//! one system call, and receive offload (UDP GRO, Linux 5.0+) to receive a
//! train of them in one.
//!
//! Hand-written because it is two system calls with one control message
//! each; the crates that offer it (quinn-udp) are shaped around QUIC.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// `UDP_SEGMENT` from `<linux/udp.h>`.
const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO` from `<linux/udp.h>`.
const UDP_GRO: libc::c_int = 104;

/// The most segments one GSO send may carry (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

/// A control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Turns on UDP GRO for `socket`; false if the kernel does not offer it
/// (then every datagram arrives on its own, as before).
pub fn enable_gro(socket: &UdpSocket) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int we own for the given length.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// A socket address in the C layout, with its length.
fn to_raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_raw(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Sends `packets` to `dest` in one `sendmsg`. With more than one, they go
/// as one GSO train: every packet but the last must be exactly as long as
/// the first, the last no longer, at most [`MAX_SEGMENTS`] of them and at
/// most 65507 bytes together (the caller groups them so).
pub fn send_train(socket: &UdpSocket, dest: SocketAddr, packets: &[&[u8]]) -> io::Result<usize> {
    if packets.is_empty() || packets.len() > MAX_SEGMENTS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "train size"));
    }
    let segment = packets[0].len();
    if packets[..packets.len() - 1]
        .iter()
        .any(|p| p.len() != segment)
        || packets[packets.len() - 1].len() > segment
        || u16::try_from(segment).is_err()
    {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "uneven train"));
    }
    let (mut name, name_len) = to_raw(dest);
    // SAFETY: iovec is plain old data; all-zero is valid.
    let mut iov: [libc::iovec; MAX_SEGMENTS] = unsafe { zeroed() };
    for (v, p) in iov.iter_mut().zip(packets) {
        v.iov_base = p.as_ptr() as *mut libc::c_void;
        v.iov_len = p.len();
    }
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = name_len;
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = packets.len() as _;
    if packets.len() > 1 {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes (< 64) of our aligned
        // buffer, so CMSG_FIRSTHDR is non-null and its data has room for a u16.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        }
    }
    // SAFETY: every pointer in `msg` refers to memory that outlives the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Receives one datagram, or with GRO a train of datagrams from one
/// sender: returns (bytes, sender, segment size). The train is `bytes`
/// long and splits into datagrams of `segment` bytes (the last may be
/// shorter); without GRO `segment == bytes`.
pub fn recv_train(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    // SAFETY: sockaddr_storage and msghdr are plain old data; all-zero is valid.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: every pointer in `msg` refers to memory we own for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut segment = n;
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of
    // well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from = from_raw(&name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sender address family"))?;
    Ok((n, from, segment.min(n).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_train_arrives_as_its_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let gro = enable_gro(&rx);
        let packets: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; if i == 4 { 300 } else { 1000 }])
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let sent = send_train(&tx, rx.local_addr().unwrap(), &refs).unwrap();
        assert_eq!(sent, 4300);
        // Whether the kernel hands them over as one train or five, the
        // receiver sees the same five datagrams in order.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < 5 {
            let (n, from, seg) = recv_train(&rx, &mut buf).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            got.extend(buf[..n].chunks(seg).map(<[u8]>::to_vec));
        }
        assert_eq!(got, packets, "gro={gro}");
        // Uneven trains are refused before any system call.
        let bad: Vec<&[u8]> = vec![&[1; 10], &[2; 20]];
        assert!(send_train(&tx, rx.local_addr().unwrap(), &bad).is_err());
    }
}
