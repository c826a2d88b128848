//! A layer-3 TUN device (`IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`): every
//! packet read or written begins with a virtio-net header, and with TSO
//! on the kernel may hand over TCP super-packets and partial checksums
//! (`crate::offload`).
//!
//! The device has one or more queues (`IFF_MULTI_QUEUE`), one per data-plane
//! worker: the kernel hands each flow's packets to one queue (by flow
//! hash), so workers read in parallel without reordering a flow.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_VNET_HDR: libc::c_int = 0x4000;
const IFF_MULTI_QUEUE: libc::c_int = 0x0100;
/// Refuse to attach to a device that already exists.
const IFF_TUN_EXCL: libc::c_int = 0x8000;
/// The kernel's limit on queues per device (`MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;

/// An open TUN device; it disappears (with its routes) when dropped.
#[derive(Debug)]
pub struct Tun {
    queues: Vec<File>,
    name: String,
    index: u32,
    mtu: u32,
}

fn ifreq_with_name(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name '{name}'"),
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn control_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

impl Tun {
    /// Creates TUN device `name` with `queues` queues (1 to [`MAX_QUEUES`]),
    /// sets its MTU and brings it up. A device of that name that already
    /// exists is refused (`AlreadyExists`): it belongs to someone else, or
    /// to another hub still running.
    pub fn create(name: &str, mtu: u32, queues: usize) -> io::Result<Tun> {
        if !(1..=MAX_QUEUES).contains(&queues) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a TUN device has 1 to {MAX_QUEUES} queues, not {queues}"),
            ));
        }
        let mut files = Vec::with_capacity(queues);
        let mut actual = name.to_string();
        for q in 0..queues {
            // The first queue creates the device exclusively; the others
            // attach to it by the name the kernel gave.
            let exclusive = if q == 0 { IFF_TUN_EXCL } else { 0 };
            let (file, got) = open_queue(&actual, exclusive).map_err(|e| {
                if q == 0 && e.raw_os_error() == Some(libc::EBUSY) {
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("TUN device {name} already exists (is another hub running?)"),
                    )
                } else {
                    e
                }
            })?;
            actual = got;
            files.push(file);
        }
        let sock = control_socket()?;
        let mut req = ifreq_with_name(&actual)?;
        req.ifr_ifru.ifru_mtu =
            i32::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU"))?;
        // SAFETY: SIOCSIFMTU reads one ifreq we own.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req = ifreq_with_name(&actual)?;
        // SAFETY: SIOCGIFFLAGS fills one ifreq we own.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just wrote the flags member of the union.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads one ifreq we own.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let cname = std::ffi::CString::new(actual.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name"))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tun {
            queues: files,
            name: actual,
            index,
            mtu,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The MTU it was created with: no packet read from it is longer.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The interface index (for routes).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many queues the device has (one per worker).
    pub fn queues(&self) -> usize {
        self.queues.len()
    }

    fn queue(&self, q: usize) -> &File {
        &self.queues[q % self.queues.len()]
    }

    /// Reads one packet from queue `q` if one is waiting there, without waiting.
    pub fn try_read(&self, q: usize, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.queue(q).read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads one packet from queue `q`; waits at most `timeout_ms` for one
    /// (None if none came).
    pub fn recv(&self, q: usize, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<usize>> {
        if let Some(n) = self.try_read(q, buf)? {
            return Ok(Some(n));
        }
        if !super::poll_readable(self.queue(q).as_raw_fd(), timeout_ms)? {
            return Ok(None);
        }
        self.try_read(q, buf)
    }

    /// Writes one packet, which begins with its virtio-net header, through
    /// queue `q` (any queue reaches the kernel's stack alike).
    pub fn write_with_hdr(&self, q: usize, bytes: &[u8]) -> io::Result<usize> {
        self.queue(q).write(bytes)
    }
}

/// Opens one queue of TUN device `name` (non-blocking, so that a busy
/// worker reads packet after packet and only polls, a second syscall, when
/// its queue is empty); returns it with the device's actual name.
fn open_queue(name: &str, extra_flags: libc::c_int) -> io::Result<(File, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = ifreq_with_name(name)?;
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE | extra_flags)
            as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq we own.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Checksum offload and TSO: the kernel may then give us up to 64 KiB
    // of TCP in one read. Without them the header stays, unused.
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes its argument by value.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETOFFLOAD, offloads) } < 0 {
        tracing::debug!("TUN offloads refused: {}", io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates ifr_name within IFNAMSIZ.
    let actual = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok((file, actual))
}
