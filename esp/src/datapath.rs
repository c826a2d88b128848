//! Packet processing and the worker threads that run it.
//!
//! ```text
//!  TUN ──read×N──▶ encapsulate: LPM(dst) → selector check → seq → seal ──GSO train──▶ UDP 4500
//!  UDP 4500 ──GRO train──▶ natt::classify: keepalive │ IKE → control plane
//!                     else decapsulate: SPI → (ESN: high bits) → replay pre-check → open → replay update
//!                                       → selector check ──write──▶ TUN
//! ```

use crate::offload::{self, OffloadError, VnetHdr, VNET_HDR_LEN};
use crate::packet::{header_seq, header_spi, HEADROOM, TAILROOM};
use crate::selector::{flow_allowed, Flow};
use crate::sys::{udp, Tun};
use crate::table::{Counters, DropReason, OutboundSa, SaTable, Snapshot};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

use crate::wire::protocol::{IPIP as IPPROTO_IPIP, IPV6 as IPPROTO_IPV6, TCP as IPPROTO_TCP};
const MAX_PACKET: usize = 65535;
const POLL_MS: i32 = 200;

/// A packet that did not make it, with the counters to charge.
#[derive(Debug)]
pub struct Dropped<'a> {
    /// Why.
    pub reason: DropReason,
    /// The facility's counters, when the SA was known.
    pub counters: Option<&'a Counters>,
    /// For [`DropReason::Mtu`]: the tunnel MTU the sender must be told.
    pub mtu: u32,
}

fn dropped(reason: DropReason, counters: Option<&Counters>) -> Dropped<'_> {
    Dropped {
        reason,
        counters,
        mtu: 0,
    }
}

/// Seals the inner packet at `buf[inner]` for the SA whose facility-side
/// selectors contain its destination. Returns the ESP packet's range and
/// where to send it.
pub fn encapsulate<'a>(
    snapshot: &'a Snapshot,
    buf: &mut [u8],
    inner: Range<usize>,
    iv_source: &mut dyn FnMut(&mut [u8]) -> Result<(), DropReason>,
) -> Result<(Range<usize>, SocketAddr), Dropped<'a>> {
    let (flow, sa) = route(snapshot, &buf[inner.clone()])?;
    seal_for(sa, flow, buf, inner, iv_source)
}

/// The inner packet's flow and the SA that carries its destination.
fn route<'a>(snapshot: &'a Snapshot, packet: &[u8]) -> Result<(Flow, &'a OutboundSa), Dropped<'a>> {
    let flow = Flow::parse(packet).ok_or(dropped(DropReason::Malformed, None))?;
    let sa = snapshot
        .outbound(flow.dst)
        .ok_or(dropped(DropReason::NoRoute, None))?;
    Ok((flow, sa))
}

/// [`encapsulate`] once the SA is known: selector and size checks, the
/// next sequence number, sealing.
fn seal_for<'a>(
    sa: &'a OutboundSa,
    flow: Flow,
    buf: &mut [u8],
    inner: Range<usize>,
    iv_source: &mut dyn FnMut(&mut [u8]) -> Result<(), DropReason>,
) -> Result<(Range<usize>, SocketAddr), Dropped<'a>> {
    let counters = Some(&*sa.counters);
    if !flow_allowed(&flow, &sa.local_ts, &sa.remote_ts, false) {
        return Err(dropped(DropReason::Policy, counters));
    }
    // RFC 4459 §3: a packet too large for the tunnel that may not be
    // fragmented is refused with ICMP; TCP SYNs are clamped so that TCP
    // never sends such packets, even where ICMP is filtered.
    let mtu = sa.mtu.get();
    if inner.len() > mtu as usize && crate::mtu::must_not_fragment(&buf[inner.clone()]) {
        return Err(Dropped {
            reason: DropReason::Mtu,
            counters,
            mtu,
        });
    }
    if flow.protocol == IPPROTO_TCP {
        crate::mtu::clamp_mss(&mut buf[inner.clone()], mtu);
    }
    let seq = sa
        .next_seq()
        .ok_or(dropped(DropReason::SeqExhausted, counters))?;
    let next_header = if flow.src.is_ipv4() {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    let len = inner.len() as u64;
    let range = sa
        .crypto
        .seal(buf, inner, sa.spi, seq, next_header, iv_source)
        .map_err(|r| dropped(r, counters))?;
    sa.counters.packets_out.fetch_add(1, Ordering::Relaxed);
    sa.counters.bytes_out.fetch_add(len, Ordering::Relaxed);
    sa.bytes.fetch_add(len, Ordering::Relaxed);
    sa.packets.fetch_add(1, Ordering::Relaxed);
    Ok((range, sa.remote()))
}

/// Verifies, decrypts and checks an ESP packet in place; returns the inner
/// packet's range. A replayed packet is refused before decryption and a
/// sequence number is recorded only once its ICV verified (RFC 4303 §3.4.3).
/// With ESN the high 32 bits are guessed from the window first (RFC 4303
/// Appendix A2.2) and the ICV verified with them; a wrong guess fails the
/// ICV and, as Appendix A2.3 has it, the packet is rejected and the window
/// left alone.
pub fn decapsulate<'a>(
    snapshot: &'a Snapshot,
    packet: &mut [u8],
) -> Result<Range<usize>, Dropped<'a>> {
    let spi = header_spi(packet).ok_or(dropped(DropReason::Malformed, None))?;
    let low = header_seq(packet).ok_or(dropped(DropReason::Malformed, None))?;
    let sa = snapshot
        .inbound(spi)
        .ok_or(dropped(DropReason::NoSa, None))?;
    let counters = Some(&*sa.counters);
    let seq = sa
        .sequence_number(low)
        .ok_or(dropped(DropReason::Replay, counters))?;
    if !sa.replay().check(seq) {
        return Err(dropped(DropReason::Replay, counters));
    }
    let (range, next_header) = sa
        .crypto
        .open(packet, seq)
        .map_err(|r| dropped(r, counters))?;
    if !sa.replay().update(seq) {
        return Err(dropped(DropReason::Replay, counters));
    }
    let flow =
        Flow::parse(&packet[range.clone()]).ok_or(dropped(DropReason::Malformed, counters))?;
    let expected = if flow.src.is_ipv4() {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    if next_header != expected {
        return Err(dropped(DropReason::Malformed, counters));
    }
    if !flow_allowed(&flow, &sa.local_ts, &sa.remote_ts, true) {
        return Err(dropped(DropReason::Policy, counters));
    }
    if flow.protocol == IPPROTO_TCP {
        crate::mtu::clamp_mss(&mut packet[range.clone()], sa.mtu.get());
    }
    sa.counters.packets_in.fetch_add(1, Ordering::Relaxed);
    sa.bytes.fetch_add(range.len() as u64, Ordering::Relaxed);
    sa.packets.fetch_add(1, Ordering::Relaxed);
    sa.counters
        .bytes_in
        .fetch_add(range.len() as u64, Ordering::Relaxed);
    Ok(range)
}

fn charge(table: &SaTable, d: &Dropped<'_>) {
    match d.counters {
        Some(c) => c.drop(d.reason),
        None => table.global.drop(d.reason),
    }
}

/// Receives IKE datagrams that arrive on a NAT-T socket: (remote, local, datagram).
pub type IkeSink = Arc<dyn Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync>;

/// Told when a facility's tunnel MTU changed because the path to it is
/// smaller (or larger again) than was known: (facility, tunnel MTU now).
/// The control plane sets the MTU of the facility's routes to match, so
/// that the kernel itself tells senders and clamps before the TUN device.
pub type MtuSink = Arc<dyn Fn(&str, u32) + Send + Sync>;

/// The running data plane.
pub struct DataPlane {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataPlane({} workers)", self.threads.len())
    }
}

impl DataPlane {
    /// Starts one outbound worker per TUN queue and one inbound worker per
    /// NAT-T socket (several sockets of one address share its port with
    /// `SO_REUSEPORT`, so the kernel spreads facilities over them).
    /// Outbound worker `i` sends through the `i`-th socket of the family
    /// (modulo their number); inbound worker `i` writes to TUN queue `i`.
    pub fn start(
        tun: Arc<Tun>,
        sockets: Vec<Arc<UdpSocket>>,
        table: Arc<SaTable>,
        on_ike: IkeSink,
        on_mtu: MtuSink,
    ) -> io::Result<DataPlane> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for s in &sockets {
            s.set_read_timeout(Some(Duration::from_millis(POLL_MS as u64)))?;
        }
        let family = |v4: bool| -> Vec<Arc<UdpSocket>> {
            sockets
                .iter()
                .filter(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == v4))
                .cloned()
                .collect()
        };
        let (v4, v6) = (family(true), family(false));
        let nth = |all: &[Arc<UdpSocket>], i: usize| all.get(i % all.len().max(1)).cloned();
        for q in 0..tun.queues() {
            let (tun, table, stop) = (tun.clone(), table.clone(), stop.clone());
            let out = Outbound {
                queue: q,
                v4: nth(&v4, q),
                v6: nth(&v6, q),
                on_mtu: on_mtu.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("esp-out-{q}"))
                    .spawn(move || out.run(&tun, &table, &stop))?,
            );
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            let (tun, table, stop, on_ike) =
                (tun.clone(), table.clone(), stop.clone(), on_ike.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("esp-in-{i}"))
                    .spawn(move || inbound_worker(i, &tun, &socket, &table, &stop, &on_ike))?,
            );
        }
        Ok(DataPlane { stop, threads })
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Packets sealed and sent per batch (a TSO super-packet of 64 KiB at the
/// smallest MSS worth offloading fills half).
const BATCH: usize = 128;
/// The most UDP payload bytes in one GSO train (an IPv4 datagram's limit,
/// 65507, less room for rounding).
const MAX_TRAIN_BYTES: usize = 65_000;

fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// Groups sealed packets (`packets[k]` goes to `dest(k)`) into GSO trains
/// by address family: runs to one destination, every packet as long as
/// the first but the last, which may be shorter, at most
/// [`udp::MAX_SEGMENTS`] and [`MAX_TRAIN_BYTES`]. Without GSO every packet
/// is a train of its own.
fn group_trains(
    packets: &[&[u8]],
    dest: impl Fn(usize) -> SocketAddr,
    gso: bool,
    trains: &mut [Vec<udp::Train>; 2],
) {
    trains.iter_mut().for_each(Vec::clear);
    let mut j = 0;
    while j < packets.len() {
        let to = dest(j);
        let segment = packets[j].len();
        let (mut k, mut total) = (j + 1, segment);
        while gso && k < packets.len() && k - j < udp::MAX_SEGMENTS {
            let len = packets[k].len();
            if dest(k) != to || len > segment || total + len > MAX_TRAIN_BYTES {
                break;
            }
            total += len;
            k += 1;
            if len < segment {
                break;
            }
        }
        trains[usize::from(to.is_ipv6())].push(udp::Train {
            dest: to,
            range: j..k,
        });
        j = k;
    }
}

/// One outbound worker: its TUN queue and the sockets it sends from.
struct Outbound {
    queue: usize,
    v4: Option<Arc<UdpSocket>>,
    v6: Option<Arc<UdpSocket>>,
    on_mtu: MtuSink,
}

/// ICMP errors a worker sends back into the TUN device, at most
/// [`ICMP_PER_SEC`] a second (RFC 1812 §4.3.2.8: rate-limited).
struct IcmpReplies {
    buf: Vec<u8>,
    window: Instant,
    sent: u32,
}

const ICMP_PER_SEC: u32 = 200;
/// How often a worker may log a send failure (they come in bursts).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl IcmpReplies {
    fn new() -> IcmpReplies {
        IcmpReplies {
            buf: vec![0u8; VNET_HDR_LEN + crate::mtu::ICMP_REPLY_MAX],
            window: Instant::now(),
            sent: 0,
        }
    }

    /// Tells the sender of `packet` (too big for the tunnel) to send at
    /// most `mtu` bytes.
    fn send(&mut self, tun: &Tun, queue: usize, table: &SaTable, packet: &[u8], mtu: u32) {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            (self.window, self.sent) = (now, 0);
        }
        if self.sent >= ICMP_PER_SEC {
            return;
        }
        // A zero virtio-net header: a complete packet, nothing to offload.
        self.buf[..VNET_HDR_LEN].fill(0);
        let Some(n) = crate::mtu::too_big_reply(packet, mtu, &mut self.buf[VNET_HDR_LEN..]) else {
            return;
        };
        self.sent += 1;
        if tun
            .write_with_hdr(queue, &self.buf[..VNET_HDR_LEN + n])
            .is_err()
        {
            table.global.drop(DropReason::Io);
        }
    }
}

impl Outbound {
    /// Reads a batch of packets from the worker's TUN queue (waiting only
    /// for the first), seals each in its own slot, groups them into GSO
    /// trains (runs of packets to one facility, all as long as the first
    /// but the last) and sends all trains of an address family with one
    /// `sendmmsg` (`sys::udp::send_trains`). One `read` per packet or TSO
    /// super-packet; no allocation and no lock per packet, one lock per SA
    /// per batch (its send turn, so that its packets leave in order).
    fn run(&self, tun: &Tun, table: &SaTable, stop: &AtomicBool) {
        let mut batch = Batch::new(tun.mtu());
        let slot = batch.slot;
        let mut sealed: Vec<(usize, Range<usize>, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut trains: [Vec<udp::Train>; 2] =
            [Vec::with_capacity(BATCH), Vec::with_capacity(BATCH)];
        let mut gso = true;
        let mut icmp = IcmpReplies::new();
        let mut last_warn: Option<Instant> = None;
        let mut iv_source =
            |iv: &mut [u8]| aws_lc_rs::rand::fill(iv).map_err(|_| DropReason::Crypto);
        while !stop.load(Ordering::Relaxed) {
            let count = batch.read(tun, self.queue, table);
            if count == 0 {
                continue;
            }
            let snapshot = table.snapshot();
            sealed.clear();
            let Batch { bufs, lens, .. } = &mut batch;
            // Each packet's SA; then the send turn of every SA in the batch,
            // taken in address order (no two workers wait on each other) and
            // held until the trains are sent: each SA's packets leave in
            // sequence-number order (OutboundSa::send_turn).
            let routes: [Option<Result<(Flow, &OutboundSa), Dropped<'_>>>; BATCH] =
                std::array::from_fn(|i| {
                    (i < count).then(|| {
                        let inner = i * slot + HEADROOM..i * slot + HEADROOM + lens[i];
                        route(&snapshot, &bufs[inner])
                    })
                });
            let mut turns: [Option<&OutboundSa>; BATCH] = [None; BATCH];
            for (t, r) in turns.iter_mut().zip(&routes) {
                if let Some(Ok((_, sa))) = r {
                    *t = Some(*sa);
                }
            }
            let turns = &mut turns[..count];
            turns.sort_unstable_by_key(|sa| sa.map(|sa| std::ptr::from_ref(sa) as usize));
            let mut held: [Option<std::sync::MutexGuard<'_, ()>>; BATCH] =
                std::array::from_fn(|_| None);
            let mut last = None;
            for (h, sa) in held.iter_mut().zip(turns.iter().flatten()) {
                if last.is_some_and(|l| std::ptr::eq(l, *sa)) {
                    continue;
                }
                last = Some(*sa);
                *h = Some(sa.send_turn());
            }
            for (i, (len, r)) in lens.iter().zip(routes).enumerate().take(count) {
                let chunk = &mut bufs[i * slot..(i + 1) * slot];
                let inner = HEADROOM..HEADROOM + len;
                let sealed_one = match r {
                    Some(Ok((flow, sa))) => {
                        seal_for(sa, flow, chunk, inner.clone(), &mut iv_source)
                    }
                    Some(Err(d)) => Err(d),
                    None => continue,
                };
                match sealed_one {
                    Ok((range, remote)) => sealed.push((i, range, remote)),
                    Err(d) => {
                        charge(table, &d);
                        if d.reason == DropReason::Mtu {
                            icmp.send(tun, self.queue, table, &chunk[inner], d.mtu);
                        }
                    }
                }
            }
            // Sealed packets in order, and the trains over them by family.
            let mut refs: [&[u8]; BATCH] = [&[]; BATCH];
            for (r, (i, range, _)) in refs.iter_mut().zip(&sealed) {
                *r = &bufs[i * slot..(i + 1) * slot][range.clone()];
            }
            let refs = &refs[..sealed.len()];
            group_trains(refs, |k| sealed[k].2, gso, &mut trains);
            for (socket, trains) in [&self.v4, &self.v6].into_iter().zip(&trains) {
                let Some(socket) = socket else {
                    for t in trains {
                        for _ in t.range.clone() {
                            table.global.drop(DropReason::Io);
                        }
                    }
                    continue;
                };
                udp::send_trains(socket, refs, trains, &mut |i, e| {
                    let t = &trains[i];
                    let failed = FailedTrain {
                        dest: t.dest,
                        packets: &refs[t.range.clone()],
                        inner_lens: &mut sealed[t.range.clone()]
                            .iter()
                            .map(|(slot, ..)| lens[*slot]),
                    };
                    self.retry(
                        socket,
                        &snapshot,
                        table,
                        failed,
                        e,
                        &mut gso,
                        &mut last_warn,
                    );
                });
            }
            // Handed to the kernel: the next worker may number these SAs.
            drop(held);
        }
    }

    /// A train the kernel refused. When the path to the facility has
    /// become smaller than the train's datagrams (`EMSGSIZE`: the kernel
    /// learned the path MTU from ICMP; a GSO train is never fragmented),
    /// the facility's tunnel MTU is lowered to fit, so later packets are
    /// refused before sealing with ICMP to their sender, and the control
    /// plane lowers the facility's routes. Either way nothing already
    /// sealed is dropped for its size: each packet is sent again on its
    /// own, which the kernel fragments if it must. What still cannot be
    /// sent is counted against the facility (not as sent) and logged.
    #[allow(clippy::too_many_arguments)]
    fn retry(
        &self,
        socket: &UdpSocket,
        snapshot: &Snapshot,
        table: &SaTable,
        failed: FailedTrain<'_, '_>,
        e: io::Error,
        gso: &mut bool,
        last_warn: &mut Option<Instant>,
    ) {
        let FailedTrain {
            dest,
            packets,
            inner_lens,
        } = failed;
        let Some(first) = packets.first() else {
            return;
        };
        let sa = header_spi(first).and_then(|spi| snapshot.outbound_by_spi(spi));
        let outer = if dest.is_ipv4() { 20 + 8 } else { 40 + 8 };
        // Only a size error (or, on older kernels, a refused GSO train) can
        // mean a smaller path: ask the kernel for it then, not on every
        // failure (an unreachable facility fails every train).
        let gso_refused = packets.len() > 1 && is_gso_refusal(&e);
        let emsgsize = e.raw_os_error() == Some(libc::EMSGSIZE);
        let path = (emsgsize || gso_refused)
            .then(|| udp::path_mtu(dest).ok())
            .flatten();
        let too_big = path.is_some_and(|mtu| first.len() + outer > mtu as usize);
        let mut resend = false;
        if too_big || emsgsize {
            resend = true;
            if let (Some(sa), Some(path)) = (sa, path.filter(|_| too_big)) {
                let fit = crate::mtu::inner_fit(path, outer as u32, |n| sa.crypto.overhead(n));
                if sa.mtu.learn(fit) {
                    warn!(
                        peer = %sa.peer, remote = %dest, path_mtu = path, tunnel_mtu = sa.mtu.get(),
                        "the path to the facility is smaller than its tunnel: \
                         larger packets now get ICMP back, TCP is clamped to fit"
                    );
                    (self.on_mtu)(&sa.peer, sa.mtu.get());
                }
            }
        } else if gso_refused {
            if *gso {
                warn!("UDP segmentation offload refused ({e}); sending packet by packet");
            }
            *gso = false;
            resend = true;
        }
        let mut unsent = |inner: usize, e: &io::Error| {
            match sa {
                Some(sa) => {
                    sa.counters.as_ref().drop(DropReason::Io);
                    sa.counters.packets_out.fetch_sub(1, Ordering::Relaxed);
                    sa.counters
                        .bytes_out
                        .fetch_sub(inner as u64, Ordering::Relaxed);
                }
                None => table.global.drop(DropReason::Io),
            }
            if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                *last_warn = Some(Instant::now());
                let peer = sa.map_or("?", |sa| &sa.peer);
                warn!(%peer, remote = %dest, "ESP not sent: {e} (counted as io drops)");
            }
        };
        for (p, inner) in packets.iter().zip(inner_lens) {
            if !resend {
                unsent(inner, &e);
            } else if let Err(e) = socket.send_to(p, dest) {
                unsent(inner, &e);
            }
        }
    }
}

/// The packets of a train the kernel refused, with their inner lengths.
struct FailedTrain<'p, 'l> {
    dest: SocketAddr,
    packets: &'p [&'p [u8]],
    inner_lens: &'l mut dyn Iterator<Item = usize>,
}

/// An outbound worker's buffers: what it read from its TUN queue and the
/// slots the packets are sealed in, each with room for the ESP headers.
struct Batch {
    /// One read from the TUN device (virtio-net header and packet).
    raw: Vec<u8>,
    /// `BATCH` slots of `slot` bytes; the inner packet at `HEADROOM`.
    bufs: Vec<u8>,
    /// The inner packet's length in each slot.
    lens: [usize; BATCH],
    slot: usize,
    mtu: usize,
    /// A packet read but not yet cut into the batch (it did not fit).
    pending: Option<usize>,
}

impl Batch {
    fn new(tun_mtu: u32) -> Batch {
        let mtu = (tun_mtu as usize).min(MAX_PACKET);
        let slot = HEADROOM + mtu + TAILROOM;
        Batch {
            raw: vec![0u8; VNET_HDR_LEN + MAX_PACKET],
            bufs: vec![0u8; slot * BATCH],
            lens: [0; BATCH],
            slot,
            mtu,
            pending: None,
        }
    }

    /// Reads packets from TUN queue `queue` into the slots (cutting TSO
    /// super-packets into segments) until the batch is full or the queue
    /// empty; returns how many slots were filled. A packet that no longer
    /// fits waits in `pending` for the next batch.
    fn read(&mut self, tun: &Tun, queue: usize, table: &SaTable) -> usize {
        let (slot, mtu) = (self.slot, self.mtu);
        let mut count = 0;
        loop {
            let n = match self.pending.take() {
                Some(n) => n,
                None if count >= BATCH => break,
                None => {
                    let read = if count == 0 {
                        tun.recv(queue, &mut self.raw, POLL_MS)
                    } else {
                        tun.try_read(queue, &mut self.raw)
                    };
                    match read {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            warn!("TUN read failed: {e}");
                            if count == 0 {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            break;
                        }
                    }
                }
            };
            let Some(hdr) = VnetHdr::parse(&self.raw[..n]) else {
                table.global.drop(DropReason::Malformed);
                continue;
            };
            let packet = &mut self.raw[VNET_HDR_LEN..n];
            match offload::prepare(
                &hdr,
                packet,
                &mut self.bufs[count * slot..],
                slot,
                HEADROOM,
                mtu,
                &mut self.lens[count..],
            ) {
                Ok(k) => count += k,
                Err(OffloadError::TooManySegments) if count > 0 => {
                    // Seal and send what we have, then this packet.
                    self.pending = Some(n);
                    break;
                }
                Err(_) => table.global.drop(DropReason::Malformed),
            }
        }
        count
    }
}

/// Bytes per receive slot: a whole GRO train (at most 64 KiB).
const RECV_SLOT: usize = 65_536;

/// Receives datagrams on a NAT-T socket, [`udp::RECV_TRAINS`] datagrams
/// or GRO trains per `recvmmsg`, and hands each to IKE or decapsulates it
/// to TUN queue `queue`.
fn inbound_worker(
    queue: usize,
    tun: &Tun,
    socket: &UdpSocket,
    table: &SaTable,
    stop: &AtomicBool,
    on_ike: &IkeSink,
) {
    let mut buf = vec![0u8; RECV_SLOT * udp::RECV_TRAINS];
    let mut received = [None; udp::RECV_TRAINS];
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if !udp::enable_gro(socket) {
        debug!(%local, "UDP GRO not available; one datagram per receive");
    }
    let mut coalescer = offload::Coalescer::default();
    let mut write = |b: &[u8]| {
        if tun.write_with_hdr(queue, b).is_err() {
            table.global.drop(DropReason::Io);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let n = match udp::recv_trains(socket, &mut buf, RECV_SLOT, &mut received) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                warn!("UDP receive failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let snapshot = table.snapshot();
        for (slot, r) in buf.chunks_exact_mut(RECV_SLOT).zip(&received).take(n) {
            let Some(r) = r else { continue };
            for packet in slot[..r.len].chunks_mut(r.segment) {
                // RFC 3948 §2: a NAT keepalive, IKE behind the non-ESP
                // marker, or ESP.
                match natt::classify(packet) {
                    natt::Datagram::Keepalive => continue,
                    // IKE reads the datagram as it came, marker included.
                    natt::Datagram::Ike(_) => {
                        on_ike(r.from, local, packet);
                        continue;
                    }
                    natt::Datagram::Malformed => {
                        table.global.drop(DropReason::Malformed);
                        continue;
                    }
                    natt::Datagram::Esp(_) => {}
                }
                match decapsulate(&snapshot, packet) {
                    // Segments of one TCP flow merge into one write (GRO);
                    // anything else is written as it is.
                    Ok(range) => {
                        let inner = &packet[range];
                        if !coalescer.push(inner) {
                            coalescer.flush(&mut write);
                            coalescer.push(inner);
                        }
                    }
                    Err(d) => charge(table, &d),
                }
            }
        }
        coalescer.flush(&mut write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Cipher, Integrity};
    use crate::selector::Selector;
    use crate::table::ChildSaSpec;
    use zeroize::Zeroizing;

    fn sel(a: &str, b: &str) -> Selector {
        Selector {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
            protocol: 0,
            start_port: 0,
            end_port: 65535,
        }
    }

    fn spec(
        peer: &str,
        spi_in: u32,
        spi_out: u32,
        remote: (&str, &str),
        swap: bool,
        cipher: Cipher,
        integ: Option<Integrity>,
    ) -> ChildSaSpec {
        let klen = match cipher {
            Cipher::AesGcm16(b) => usize::from(b) / 8 + 4,
            Cipher::AesCbc(b) | Cipher::CamelliaCbc(b) => usize::from(b) / 8,
        };
        let ilen = integ.map_or(0, |_| 32);
        let (a, b) = (
            Zeroizing::new(vec![1u8; klen]),
            Zeroizing::new(vec![2u8; klen]),
        );
        let (ia, ib) = (
            Zeroizing::new(vec![3u8; ilen]),
            Zeroizing::new(vec![4u8; ilen]),
        );
        let (encr_in, encr_out, integ_in, integ_out) =
            if swap { (b, a, ib, ia) } else { (a, b, ia, ib) };
        ChildSaSpec {
            peer: peer.into(),
            spi_in,
            spi_out,
            cipher,
            integrity: integ,
            esn: false,
            encr_in,
            integ_in,
            encr_out,
            integ_out,
            local_ts: vec![sel("203.0.113.0", "203.0.113.127")],
            remote_ts: vec![sel(remote.0, remote.1)],
            remote: "192.0.2.2:4500".parse().unwrap(),
        }
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
        let total = 20 + payload;
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            1,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend((0..payload).map(|i| i as u8));
        p
    }

    /// The hub's table and the facility's mirror image.
    fn tables(cipher: Cipher, integ: Option<Integrity>) -> (SaTable, SaTable) {
        tables_with(cipher, integ, false)
    }

    fn tables_with(cipher: Cipher, integ: Option<Integrity>, esn: bool) -> (SaTable, SaTable) {
        let hub = SaTable::new();
        let mut h = spec(
            "kyoto",
            0x100,
            0x200,
            ("198.51.100.0", "198.51.100.63"),
            false,
            cipher,
            integ,
        );
        h.esn = esn;
        hub.install(&h).unwrap();
        let site = SaTable::new();
        let mut s = spec(
            "hub",
            0x200,
            0x100,
            ("203.0.113.0", "203.0.113.127"),
            true,
            cipher,
            integ,
        );
        s.esn = esn;
        s.local_ts = vec![sel("198.51.100.0", "198.51.100.63")];
        site.install(&s).unwrap();
        (hub, site)
    }

    fn seal(table: &SaTable, packet: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        let snap = table.snapshot();
        encapsulate(
            &snap,
            &mut buf,
            HEADROOM..HEADROOM + packet.len(),
            &mut |iv| {
                iv.fill(7);
                Ok(())
            },
        )
        .map(|(r, _)| buf[r].to_vec())
        .map_err(|d| d.reason)
    }

    fn open(table: &SaTable, esp: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut p = esp.to_vec();
        let snap = table.snapshot();
        let r = decapsulate(&snap, &mut p).map_err(|d| {
            if let Some(c) = d.counters {
                c.drop(d.reason)
            }
            d.reason
        })?;
        Ok(p[r].to_vec())
    }

    #[test]
    fn both_directions_round_trip_for_every_suite() {
        for (cipher, integ) in [
            (Cipher::AesGcm16(256), None),
            (Cipher::AesGcm16(128), None),
            (Cipher::AesCbc(256), Some(Integrity::HmacSha256_128)),
            (Cipher::CamelliaCbc(128), Some(Integrity::HmacSha256_128)),
        ] {
            let (hub, site) = tables(cipher, integ);
            let up = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 100);
            assert_eq!(open(&hub, &seal(&site, &up).unwrap()).unwrap(), up);
            let down = ipv4([203, 0, 113, 1], [198, 51, 100, 1], 1372);
            assert_eq!(open(&site, &seal(&hub, &down).unwrap()).unwrap(), down);
            let c = hub.counters("kyoto").snapshot();
            assert_eq!((c.packets_in, c.packets_out), (1, 1));
            assert_eq!(hub.sa_bytes(0x100, 0x200), 120 + 1392);
        }
    }

    #[test]
    fn replays_are_never_delivered_twice() {
        let (hub, site) = tables(Cipher::AesGcm16(256), None);
        let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64);
        let esp = seal(&site, &p).unwrap();
        assert!(open(&hub, &esp).is_ok());
        assert_eq!(open(&hub, &esp), Err(DropReason::Replay));
        assert_eq!(hub.counters("kyoto").drops(DropReason::Replay), 1);
    }

    /// The facility's next sequence number is `next` and the hub has
    /// received everything before it.
    fn start_at(hub: &SaTable, site: &SaTable, next: u64) {
        let dst = std::net::IpAddr::from([203, 0, 113, 1]);
        site.snapshot().outbound(dst).unwrap().skip_to(next - 1);
        hub.snapshot()
            .inbound(0x100)
            .unwrap()
            .replay()
            .skip_to(next - 1);
    }

    /// With ESN, every suite carries on across 2^32: the header's number
    /// wraps to 0, the hub reconstructs the high bits (RFC 4303 Appendix
    /// A2.2), also for packets reordered across the boundary, and replays
    /// on either side of it are refused.
    #[test]
    fn esn_carries_on_across_the_32_bit_boundary_for_every_suite() {
        for (cipher, integ) in [
            (Cipher::AesGcm16(256), None),
            (Cipher::AesGcm16(128), None),
            (Cipher::AesCbc(256), Some(Integrity::HmacSha256_128)),
            (Cipher::CamelliaCbc(128), Some(Integrity::HmacSha512_256)),
        ] {
            let (hub, site) = tables_with(cipher, integ, true);
            let first = (1u64 << 32) - 3;
            start_at(&hub, &site, first);
            let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 100);
            let sealed: Vec<Vec<u8>> = (0..8).map(|_| seal(&site, &p).unwrap()).collect();
            let lows: Vec<u32> = sealed.iter().filter_map(|e| header_seq(e)).collect();
            assert_eq!(lows, [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1, 2, 3, 4]);
            // Two after the boundary first, then the ones before it
            // (the window now spans two subspaces: case B), then the rest.
            for i in [3, 4, 0, 1, 2, 5, 7, 6] {
                assert_eq!(open(&hub, &sealed[i]).unwrap(), p, "{cipher:?} #{i}");
            }
            let inbound = hub.snapshot().inbound(0x100).unwrap().clone();
            assert_eq!(inbound.replay().top(), first + 7);
            for e in &sealed {
                assert_eq!(open(&hub, e), Err(DropReason::Replay), "{cipher:?}");
            }
            // The other way too.
            let q = ipv4([203, 0, 113, 1], [198, 51, 100, 1], 1000);
            let dst = std::net::IpAddr::from([198, 51, 100, 1]);
            hub.snapshot()
                .outbound(dst)
                .unwrap()
                .skip_to(u64::from(u32::MAX));
            let site_in = site.snapshot().inbound(0x200).unwrap().clone();
            site_in.replay().skip_to(u64::from(u32::MAX));
            let down = seal(&hub, &q).unwrap();
            assert_eq!(header_seq(&down), Some(0));
            assert_eq!(open(&site, &down).unwrap(), q);
            let c = hub.counters("kyoto");
            assert_eq!(c.snapshot().packets_in, 8);
            assert_eq!(c.drops(DropReason::Replay), 8);
            assert_eq!(c.drops(DropReason::Integrity), 0);
        }
    }

    /// A packet whose high bits are not the ones the hub reconstructs
    /// fails integrity and leaves the window as it was (RFC 4303 Appendix
    /// A2.3: reject the packet).
    #[test]
    fn esn_wrong_high_bits_fail_integrity() {
        for (cipher, integ) in [
            (Cipher::AesGcm16(256), None),
            (Cipher::AesCbc(128), Some(Integrity::HmacSha384_192)),
        ] {
            let (hub, site) = tables_with(cipher, integ, true);
            let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64);
            // Sealed as 2^32 + 5 while the hub is at 100: it takes the
            // header's 5 for 5 (Th), and the ICV says otherwise.
            start_at(&hub, &site, (1 << 32) + 5);
            let ahead = seal(&site, &p).unwrap();
            start_at(&hub, &site, 101);
            let inbound = hub.snapshot().inbound(0x100).unwrap().clone();
            assert_eq!(open(&hub, &ahead), Err(DropReason::Integrity));
            assert_eq!(inbound.replay().top(), 100);
            // Sealed as 5 while the hub is near 2^32: it guesses the next
            // subspace (Th + 1), and the ICV says otherwise.
            let early = seal(&site, &p).unwrap();
            assert_eq!(header_seq(&early), Some(101));
            inbound.replay().skip_to((1 << 32) - 10);
            assert_eq!(open(&hub, &early), Err(DropReason::Integrity));
            assert_eq!(inbound.replay().top(), (1 << 32) - 10);
            assert_eq!(hub.counters("kyoto").drops(DropReason::Integrity), 2);
            assert_eq!(hub.counters("kyoto").drops(DropReason::Replay), 0);
        }
    }

    /// The counter stops at its limit: 2^32 - 1 without ESN, 2^64 - 1
    /// with it, and does not wrap to numbers already sent.
    #[test]
    fn sequence_numbers_stop_at_the_limit() {
        let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64);
        for (esn, last) in [(false, u64::from(u32::MAX)), (true, u64::MAX)] {
            let (hub, site) = tables_with(Cipher::AesGcm16(128), None, esn);
            start_at(&hub, &site, last);
            let e = seal(&site, &p).unwrap();
            assert_eq!(header_seq(&e), Some(u32::MAX));
            assert_eq!(open(&hub, &e).unwrap(), p);
            for _ in 0..3 {
                assert_eq!(seal(&site, &p), Err(DropReason::SeqExhausted), "esn {esn}");
            }
        }
    }

    #[test]
    fn parallel_workers_on_one_sa_number_and_deliver_each_packet_once() {
        const WORKERS: usize = 4;
        const EACH: usize = 2000;
        let (hub, site) = tables(Cipher::AesGcm16(256), None);
        let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64);
        // Outbound workers sealing for one SA at once: every sequence
        // number used exactly once, none skipped.
        let mut sealed: Vec<Vec<u8>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| {
                    s.spawn(|| {
                        (0..EACH)
                            .map(|_| seal(&site, &p).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        sealed.sort_by_key(|e| header_seq(e));
        let seqs: Vec<u32> = sealed.iter().filter_map(|e| header_seq(e)).collect();
        assert_eq!(seqs, (1..=(WORKERS * EACH) as u32).collect::<Vec<_>>());
        // Inbound workers each offered every packet (in order but for
        // neighbours swapped, as trains interleave): each is delivered
        // exactly once, every other copy is refused as a replay.
        let delivered: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|w| {
                    let (hub, sealed) = (&hub, &sealed);
                    s.spawn(move || {
                        let mut mine = sealed.clone();
                        for pair in mine.chunks_mut(2).skip(w % 2) {
                            pair.reverse();
                        }
                        mine.iter().filter(|e| open(hub, e).is_ok()).count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(delivered, WORKERS * EACH);
        let c = hub.counters("kyoto");
        assert_eq!(c.snapshot().packets_in, (WORKERS * EACH) as u64);
        assert_eq!(
            c.drops(DropReason::Replay),
            ((WORKERS - 1) * WORKERS * EACH) as u64
        );
    }

    #[test]
    fn sealed_packets_group_into_even_trains_per_destination() {
        let a: SocketAddr = "192.0.2.2:4500".parse().unwrap();
        let b: SocketAddr = "192.0.2.3:4500".parse().unwrap();
        let c: SocketAddr = "[2001:db8::2]:4500".parse().unwrap();
        let big = vec![0u8; 1400];
        let small = vec![0u8; 600];
        // a: 3 full + 1 short, then one more full (a new train: the short
        // one ended the last); b: 2 full; c (IPv6): 1; a: 70 full.
        let mut packets: Vec<&[u8]> = vec![&big, &big, &big, &small, &big, &big, &big, &big];
        let mut dests = vec![a, a, a, a, a, b, b, c];
        packets.extend(std::iter::repeat_n(&big[..], 70));
        dests.extend(std::iter::repeat_n(a, 70));
        let mut trains = [Vec::new(), Vec::new()];
        group_trains(&packets, |k| dests[k], true, &mut trains);
        let ranges = |t: &[udp::Train]| {
            t.iter()
                .map(|t| (t.dest, t.range.clone()))
                .collect::<Vec<_>>()
        };
        // 46 packets of 1400 bytes fill 64,400 of the 65,000 bytes a train may hold.
        assert_eq!(
            ranges(&trains[0]),
            vec![(a, 0..4), (a, 4..5), (b, 5..7), (a, 8..54), (a, 54..78)]
        );
        assert_eq!(ranges(&trains[1]), vec![(c, 7..8)]);
        // Without GSO, one packet per train.
        group_trains(&packets, |k| dests[k], false, &mut trains);
        assert_eq!(trains[0].len() + trains[1].len(), packets.len());
        assert!(trains.iter().flatten().all(|t| t.range.len() == 1));
    }

    #[test]
    fn inner_source_outside_the_selectors_is_dropped_and_counted() {
        let (hub, site) = tables(Cipher::AesGcm16(256), None);
        // The facility's own SA may carry only 198.51.100.0/26 as source;
        // forge a packet from another facility's prefix through it.
        let mut spoof = spec(
            "hub",
            0x200,
            0x100,
            ("203.0.113.0", "203.0.113.127"),
            true,
            Cipher::AesGcm16(256),
            None,
        );
        spoof.local_ts = vec![sel("0.0.0.0", "255.255.255.255")];
        let forger = SaTable::new();
        forger.install(&spoof).unwrap();
        let p = ipv4([198, 51, 100, 200], [203, 0, 113, 1], 64);
        assert_eq!(
            open(&hub, &seal(&forger, &p).unwrap()),
            Err(DropReason::Policy)
        );
        assert_eq!(hub.counters("kyoto").drops(DropReason::Policy), 1);
        // And the honest side refuses to send it at all.
        assert_eq!(seal(&site, &p), Err(DropReason::Policy));
    }

    #[test]
    fn tampering_unknown_spi_and_garbage() {
        let (hub, site) = tables(Cipher::AesCbc(128), Some(Integrity::HmacSha256_128));
        let mut esp = seal(&site, &ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64)).unwrap();
        let n = esp.len();
        esp[n - 20] ^= 0x40;
        assert_eq!(open(&hub, &esp), Err(DropReason::Integrity));
        esp[0] = 0x77;
        assert_eq!(open(&hub, &esp), Err(DropReason::NoSa));
        for len in 0..64 {
            let mut g = vec![0u8; len];
            g.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            if let Some(b) = g.get_mut(2) {
                *b = 1;
            }
            let _ = open(&hub, &g);
        }
        assert_eq!(
            seal(&hub, &ipv4([203, 0, 113, 1], [192, 0, 2, 99], 10)),
            Err(DropReason::NoRoute)
        );
        assert_eq!(seal(&hub, &[0x45, 0, 0]), Err(DropReason::Malformed));
    }

    #[test]
    fn outbound_sas_follow_a_new_address() {
        let (hub, _) = tables(Cipher::AesGcm16(256), None);
        let q = ipv4([203, 0, 113, 1], [198, 51, 100, 1], 64);
        let mut buf = vec![0u8; HEADROOM + q.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + q.len()].copy_from_slice(&q);
        let to = |hub: &SaTable, buf: &mut Vec<u8>| {
            let snap = hub.snapshot();
            encapsulate(&snap, buf, HEADROOM..HEADROOM + q.len(), &mut |iv| {
                iv.fill(0);
                Ok(())
            })
            .map(|(_, r)| r)
            .unwrap()
        };
        assert_eq!(to(&hub, &mut buf), "192.0.2.2:4500".parse().unwrap());
        assert!(hub.update_remote(0x200, "192.0.2.77:31000".parse().unwrap()));
        buf[HEADROOM..HEADROOM + q.len()].copy_from_slice(&q);
        assert_eq!(to(&hub, &mut buf), "192.0.2.77:31000".parse().unwrap());
        assert!(!hub.update_remote(0x999, "192.0.2.77:31000".parse().unwrap()));
    }

    #[test]
    fn the_newest_sa_carries_traffic_and_the_old_one_still_receives() {
        let (hub, site) = tables(Cipher::AesGcm16(256), None);
        let p = ipv4([198, 51, 100, 1], [203, 0, 113, 1], 64);
        let old = seal(&site, &p).unwrap();
        // A second Child SA for the same facility (as after a rekey).
        hub.install(&spec(
            "kyoto",
            0x300,
            0x400,
            ("198.51.100.0", "198.51.100.63"),
            false,
            Cipher::AesGcm16(256),
            None,
        ))
        .unwrap();
        let q = ipv4([203, 0, 113, 1], [198, 51, 100, 1], 64);
        let out = seal(&hub, &q).unwrap();
        assert_eq!(header_spi(&out), Some(0x400));
        assert!(open(&hub, &old).is_ok(), "old inbound SA still accepted");
        hub.remove(0x300, 0x400);
        assert_eq!(
            header_spi(&seal(&hub, &q).unwrap()),
            Some(0x200),
            "after removal the other SA is used"
        );
        hub.remove(0x100, 0x200);
        assert_eq!(seal(&hub, &q), Err(DropReason::NoRoute));
        assert!(hub.snapshot().is_empty());
    }

    #[test]
    fn an_answered_rekey_sends_on_the_old_sa_until_it_is_removed() {
        let (hub, _site) = tables(Cipher::AesGcm16(256), None);
        let q = ipv4([203, 0, 113, 1], [198, 51, 100, 1], 64);
        let new = spec(
            "kyoto",
            0x300,
            0x400,
            ("198.51.100.0", "198.51.100.63"),
            false,
            Cipher::AesGcm16(256),
            None,
        );
        hub.install_replacing(&new, 0x100).unwrap();
        assert!(
            hub.snapshot().inbound(0x300).is_some(),
            "new inbound at once"
        );
        assert_eq!(
            header_spi(&seal(&hub, &q).unwrap()),
            Some(0x200),
            "the peer may not have the new SA yet"
        );
        // A NAT change reaches the waiting SA too.
        assert!(hub.update_remote(0x400, "192.0.2.77:31000".parse().unwrap()));
        hub.remove(0x100, 0x200);
        assert_eq!(header_spi(&seal(&hub, &q).unwrap()), Some(0x400));

        // With the old SA already gone, the new one sends at once.
        let (hub, _site) = tables(Cipher::AesGcm16(256), None);
        hub.remove(0x100, 0x200);
        hub.install_replacing(&new, 0x100).unwrap();
        assert_eq!(header_spi(&seal(&hub, &q).unwrap()), Some(0x400));

        // A successor removed while waiting never sends.
        let (hub, _site) = tables(Cipher::AesGcm16(256), None);
        hub.install_replacing(&new, 0x100).unwrap();
        hub.remove(0x300, 0x400);
        hub.remove(0x100, 0x200);
        assert_eq!(seal(&hub, &q), Err(DropReason::NoRoute));
    }
}
