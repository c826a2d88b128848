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

/// The path MTU the kernel knows towards `dest`: the route's MTU, lowered
/// by any ICMP "fragmentation needed" / "packet too big" it has received
/// for that destination (which expire as the kernel's PMTU cache does).
/// Asked through a connected probe socket (`IP_MTU` works only on
/// connected sockets); called only when a send failed, never per packet.
pub fn path_mtu(dest: SocketAddr) -> io::Result<u32> {
    let any: SocketAddr = if dest.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(dest)?;
    let (level, name) = if dest.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the c_int we own
    // and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            probe.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative MTU"))
}

/// Trains sent per `sendmmsg` (more are sent in further calls).
pub const SEND_TRAINS: usize = 32;
/// Packets, all trains together, per `sendmmsg`.
const SEND_PACKETS: usize = 256;
/// Datagrams (or GRO trains) received per `recvmmsg`.
pub const RECV_TRAINS: usize = 16;

/// One GSO train: `packets[range]` all go to `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Train {
    /// Where to.
    pub dest: SocketAddr,
    /// Which of the packets.
    pub range: std::ops::Range<usize>,
}

/// Whether `packets` may go as one GSO train: at most [`MAX_SEGMENTS`],
/// every one but the last exactly as long as the first, the last no
/// longer. (The caller also keeps a train under 65,507 bytes.)
fn even(packets: &[&[u8]]) -> bool {
    let Some(first) = packets.first() else {
        return false;
    };
    let segment = first.len();
    packets.len() <= MAX_SEGMENTS
        && u16::try_from(segment).is_ok()
        && packets[..packets.len() - 1]
            .iter()
            .all(|p| p.len() == segment)
        && packets[packets.len() - 1].len() <= segment
}

/// Sends `trains` (each a run of `packets` to one destination) with one
/// `sendmmsg` per [`SEND_TRAINS`] trains: a train of more than one packet
/// goes as one GSO datagram train (`UDP_SEGMENT`). Every train that could
/// not be sent is reported to `failed` with its index and the error (an
/// uneven train as `InvalidInput`, before any system call); the others
/// were handed to the kernel.
pub fn send_trains(
    socket: &UdpSocket,
    packets: &[&[u8]],
    trains: &[Train],
    failed: &mut dyn FnMut(usize, io::Error),
) {
    let mut first = 0;
    while first < trains.len() {
        // This call's share: at most SEND_TRAINS trains and SEND_PACKETS packets.
        let mut last = first;
        let mut count = 0;
        while last < trains.len() && last - first < SEND_TRAINS {
            let n = trains[last].range.len();
            if count + n > SEND_PACKETS && last > first {
                break;
            }
            count += n;
            last += 1;
        }
        send_some(socket, packets, &trains[first..last], first, failed);
        first = last;
    }
}

fn send_some(
    socket: &UdpSocket,
    packets: &[&[u8]],
    trains: &[Train],
    offset: usize,
    failed: &mut dyn FnMut(usize, io::Error),
) {
    // SAFETY: these are plain old data; all-zero is valid for each.
    let mut names: [libc::sockaddr_storage; SEND_TRAINS] = unsafe { zeroed() };
    let mut iov: [libc::iovec; SEND_PACKETS] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_TRAINS] = unsafe { zeroed() };
    let mut control = [const { CmsgBuf([0; 64]) }; SEND_TRAINS];
    // Which train each message is (uneven trains get no message).
    let mut index = [0usize; SEND_TRAINS];
    let (mut m, mut v) = (0, 0);
    for (t, train) in trains.iter().enumerate() {
        let Some(run) = packets.get(train.range.clone()).filter(|r| even(r)) else {
            failed(
                offset + t,
                io::Error::new(io::ErrorKind::InvalidInput, "uneven train"),
            );
            continue;
        };
        let name_len;
        (names[m], name_len) = to_raw(train.dest);
        for p in run {
            iov[v] = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            v += 1;
        }
        let msg = &mut msgs[m].msg_hdr;
        msg.msg_name = (&mut names[m] as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = name_len;
        msg.msg_iov = iov[v - run.len()..].as_mut_ptr();
        msg.msg_iovlen = run.len() as _;
        if run.len() > 1 {
            // SAFETY: CMSG_SPACE is a pure size computation.
            let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            msg.msg_control = control[m].0.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points to `space` bytes (< 64) of an
            // aligned buffer of ours, so CMSG_FIRSTHDR is non-null and its
            // data has room for a u16.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(msg);
                (*cmsg).cmsg_level = libc::SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), run[0].len() as u16);
            }
        }
        index[m] = offset + t;
        m += 1;
    }
    let mut done = 0;
    while done < m {
        // SAFETY: msgs[done..m] point into names, iov, control and the
        // caller's packets, all alive for the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs[done..m].as_mut_ptr(),
                (m - done) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            // The first unsent message failed; report it and go on.
            failed(index[done], io::Error::last_os_error());
            done += 1;
        } else {
            done += n as usize;
        }
    }
}

/// One datagram received, or with GRO a train of datagrams from one
/// sender: `len` bytes that split into datagrams of `segment` bytes (the
/// last may be shorter); without GRO `segment == len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received into the slot.
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// Size of each datagram of the train.
    pub segment: usize,
}

/// Receives up to [`RECV_TRAINS`] datagrams or GRO trains with one
/// `recvmmsg`, waiting (up to the socket's read timeout) only for the
/// first: slot `i` of `buf` (`slot` bytes each, at least 65,535 for a
/// whole train) receives `out[i]`. Returns how many arrived.
pub fn recv_trains(
    socket: &UdpSocket,
    buf: &mut [u8],
    slot: usize,
    out: &mut [Option<Received>; RECV_TRAINS],
) -> io::Result<usize> {
    let slots = (buf.len() / slot.max(1)).min(RECV_TRAINS);
    if slots == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no slot"));
    }
    // SAFETY: these are plain old data; all-zero is valid for each.
    let mut names: [libc::sockaddr_storage; RECV_TRAINS] = unsafe { zeroed() };
    let mut iov: [libc::iovec; RECV_TRAINS] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; RECV_TRAINS] = unsafe { zeroed() };
    let mut control = [const { CmsgBuf([0; 64]) }; RECV_TRAINS];
    for (i, chunk) in buf.chunks_exact_mut(slot).take(slots).enumerate() {
        iov[i] = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: slot,
        };
        let msg = &mut msgs[i].msg_hdr;
        msg.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov[i];
        msg.msg_iovlen = 1;
        msg.msg_control = control[i].0.as_mut_ptr().cast();
        msg.msg_controllen = control[i].0.len() as _;
    }
    // SAFETY: every pointer in msgs[..slots] refers to memory we own for
    // the call; MSG_WAITFORONE makes every receive after the first
    // non-blocking.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            slots as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (i, o) in out.iter_mut().enumerate() {
        *o = None;
        if i >= n {
            continue;
        }
        let len = msgs[i].msg_len as usize;
        let msg = &msgs[i].msg_hdr;
        let mut segment = len;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes
        // of well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within them.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                    let size =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    if size > 0 {
                        segment = size as usize;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        // A datagram from an unknown address family is left out.
        *o = from_raw(&names[i]).map(|from| Received {
            len,
            from,
            segment: segment.min(len).max(1),
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_mtu_of_loopback_is_its_link_mtu() {
        // No ICMP has lowered it: the route's (loopback's) MTU, 65536.
        let v4 = path_mtu("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(v4 >= 1500, "loopback path MTU {v4}");
    }

    /// A loopback receiver (GRO on where the kernel has it) that gives up
    /// after 2 s, and a sender.
    fn pair() -> (UdpSocket, UdpSocket) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        enable_gro(&rx);
        (rx, UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    /// Everything that arrives at `rx` until `want` datagrams came.
    fn receive(rx: &UdpSocket, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        let slot = 65536;
        let mut buf = vec![0u8; slot * RECV_TRAINS];
        let mut out = [None; RECV_TRAINS];
        while got.len() < want {
            let n = recv_trains(rx, &mut buf, slot, &mut out).unwrap();
            for (i, r) in out.iter().take(n).enumerate() {
                let r = r.unwrap();
                let bytes = &buf[i * slot..i * slot + r.len];
                got.extend(bytes.chunks(r.segment).map(|d| (r.from, d.to_vec())));
            }
        }
        got
    }

    #[test]
    fn trains_arrive_as_their_datagrams() {
        let (first, tx) = pair();
        let rx = [first, pair().0];
        // Five to the first receiver (four of 1000 bytes, one of 300),
        // one to the second, three more to the first: three trains, one
        // sendmmsg.
        let packets: Vec<Vec<u8>> = (0..9u8)
            .map(|i| vec![i; if i == 4 { 300 } else { 1000 }])
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let to = |r: &UdpSocket| r.local_addr().unwrap();
        let trains = [
            Train {
                dest: to(&rx[0]),
                range: 0..5,
            },
            Train {
                dest: to(&rx[1]),
                range: 5..6,
            },
            Train {
                dest: to(&rx[0]),
                range: 6..9,
            },
        ];
        let mut failures = Vec::new();
        send_trains(&tx, &refs, &trains, &mut |i, e| {
            failures.push((i, e.kind()))
        });
        assert!(failures.is_empty(), "{failures:?}");
        // Whether the kernel hands them over as trains or one by one, each
        // receiver sees its datagrams in order.
        let from = tx.local_addr().unwrap();
        let first: Vec<_> = [0, 1, 2, 3, 4, 6, 7, 8]
            .iter()
            .map(|&i| (from, packets[i].clone()))
            .collect();
        assert_eq!(receive(&rx[0], 8), first);
        assert_eq!(receive(&rx[1], 1), vec![(from, packets[5].clone())]);
    }

    #[test]
    fn uneven_trains_are_refused_and_the_rest_still_sent() {
        let (rx, tx) = pair();
        let dest = rx.local_addr().unwrap();
        let refs: Vec<&[u8]> = vec![&[1; 10], &[2; 20], &[3; 30]];
        let trains = [
            Train { dest, range: 0..2 },
            Train { dest, range: 2..3 },
            Train { dest, range: 2..9 },
        ];
        let mut failures = Vec::new();
        send_trains(&tx, &refs, &trains, &mut |i, e| {
            failures.push((i, e.kind()))
        });
        assert_eq!(
            failures,
            vec![
                (0, io::ErrorKind::InvalidInput),
                (2, io::ErrorKind::InvalidInput)
            ]
        );
        let from = tx.local_addr().unwrap();
        assert_eq!(receive(&rx, 1), vec![(from, vec![3; 30])]);
    }

    #[test]
    fn many_trains_take_several_calls() {
        let (rx, tx) = pair();
        let dest = rx.local_addr().unwrap();
        let packets: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 100]).collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let trains: Vec<Train> = (0..100)
            .map(|i| Train {
                dest,
                range: i..i + 1,
            })
            .collect();
        send_trains(&tx, &refs, &trains, &mut |i, e| panic!("train {i}: {e}"));
        let got: Vec<Vec<u8>> = receive(&rx, 100).into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, packets);
    }
}
