//! The SA database: inbound SAs by SPI, outbound SAs by longest-prefix
//! match on the destination, and per-facility counters.
//!
//! Readers (the data-plane workers) take a lock-free snapshot per batch;
//! the single writer (the control plane) publishes a new snapshot on every
//! change, so an install or removal never blocks packet processing.

use crate::mtu::TunnelMtu;
use crate::packet::{Cipher, Integrity, KeyError, SaCrypto};
use crate::replay::ReplayWindow;
use crate::selector::{PrefixMap, Selector};
use crate::shard::Sharded;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Why a packet was dropped. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Inbound SPI unknown.
    NoSa,
    /// Sequence number seen before or too old.
    Replay,
    /// ICV did not verify.
    Integrity,
    /// Too short, misaligned, bad padding or not an IP packet.
    Malformed,
    /// Inner addresses outside the SA's traffic selectors.
    Policy,
    /// No outbound SA covers the destination.
    NoRoute,
    /// The sequence number space (32 bits, or 64 with ESN) is used up: the
    /// SA must be rekeyed.
    SeqExhausted,
    /// Does not fit the buffer.
    TooBig,
    /// The crypto library failed.
    Crypto,
    /// The TUN device or the socket refused the packet.
    Io,
    /// Larger than the facility's tunnel MTU and not to be fragmented
    /// (IPv4 with DF, or IPv6): the sender was sent ICMP "fragmentation
    /// needed" / "packet too big" and sends smaller packets from then on.
    Mtu,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::NoSa,
        DropReason::Replay,
        DropReason::Integrity,
        DropReason::Malformed,
        DropReason::Policy,
        DropReason::NoRoute,
        DropReason::SeqExhausted,
        DropReason::TooBig,
        DropReason::Crypto,
        DropReason::Io,
        DropReason::Mtu,
    ];

    /// Name for status output and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NoSa => "no_sa",
            DropReason::Replay => "replay",
            DropReason::Integrity => "integrity",
            DropReason::Malformed => "malformed",
            DropReason::Policy => "policy",
            DropReason::NoRoute => "no_route",
            DropReason::SeqExhausted => "seq_exhausted",
            DropReason::TooBig => "too_big",
            DropReason::Crypto => "crypto",
            DropReason::Io => "io",
            DropReason::Mtu => "mtu",
        }
    }
}

/// Traffic counters of one facility (or of the hub as a whole).
#[derive(Debug, Default)]
pub struct Counters {
    /// Inner bytes received and delivered.
    pub bytes_in: AtomicU64,
    /// Packets received and delivered.
    pub packets_in: AtomicU64,
    /// Inner bytes sent.
    pub bytes_out: AtomicU64,
    /// Packets sent.
    pub packets_out: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts a drop.
    pub fn drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops so far for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// A plain copy for display.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            packets_in: self.packets_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name(), self.drops(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Counter values at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Inner bytes received.
    pub bytes_in: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Inner bytes sent.
    pub bytes_out: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Non-zero drop counters by reason name.
    pub drops: Vec<(&'static str, u64)>,
}

/// What one Child SA carried ([`SaTable::sa_counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Inner bytes received through its inbound SA.
    pub bytes_in: u64,
    /// Packets received through its inbound SA.
    pub packets_in: u64,
    /// Inner bytes sent through its outbound SA.
    pub bytes_out: u64,
    /// Packets sent through its outbound SA.
    pub packets_out: u64,
}

/// What the SAs of one facility share.
#[derive(Debug)]
struct Facility {
    name: Arc<str>,
    counters: Arc<Counters>,
    mtu: Arc<TunnelMtu>,
}

/// What the control plane installs for one Child SA.
#[allow(missing_debug_implementations)] // holds keys: never printed
pub struct ChildSaSpec {
    /// Facility the SA belongs to (for counters).
    pub peer: String,
    /// SPI the facility sends with.
    pub spi_in: u32,
    /// SPI we send with.
    pub spi_out: u32,
    /// Cipher.
    pub cipher: Cipher,
    /// Integrity (CBC only).
    pub integrity: Option<Integrity>,
    /// Extended Sequence Numbers negotiated (RFC 4303 §2.2.1).
    pub esn: bool,
    /// Inbound encryption key (plus GCM salt).
    pub encr_in: Zeroizing<Vec<u8>>,
    /// Inbound integrity key.
    pub integ_in: Zeroizing<Vec<u8>>,
    /// Outbound encryption key (plus GCM salt).
    pub encr_out: Zeroizing<Vec<u8>>,
    /// Outbound integrity key.
    pub integ_out: Zeroizing<Vec<u8>>,
    /// Hub-side selectors.
    pub local_ts: Vec<Selector>,
    /// Facility-side selectors.
    pub remote_ts: Vec<Selector>,
    /// The facility's NAT-T address.
    pub remote: SocketAddr,
}

/// An SA we receive on.
#[derive(Debug)]
pub struct InboundSa {
    /// SPI.
    pub spi: u32,
    pub(crate) crypto: SaCrypto,
    replay: ReplayWindow,
    /// Inner bytes delivered through this SA (for byte lifetimes).
    pub bytes: AtomicU64,
    /// Packets delivered through this SA.
    pub packets: AtomicU64,
    /// Hub-side selectors.
    pub local_ts: Vec<Selector>,
    /// Facility-side selectors.
    pub remote_ts: Vec<Selector>,
    /// The facility's counters.
    pub counters: Arc<Counters>,
    /// The facility's tunnel MTU (for MSS clamping).
    pub mtu: Arc<TunnelMtu>,
}

impl InboundSa {
    /// The replay window (lock-free; shared by the inbound workers).
    pub fn replay(&self) -> &ReplayWindow {
        &self.replay
    }

    /// The full sequence number of a packet whose header carries `low`:
    /// with ESN reconstructed from the window (RFC 4303 Appendix A2.2),
    /// without it `low` itself. `None` if no such number can be valid.
    pub fn sequence_number(&self, low: u32) -> Option<u64> {
        if self.crypto.esn() {
            self.replay.estimate(low)
        } else {
            Some(u64::from(low))
        }
    }
}

/// An SA we send on.
#[derive(Debug)]
pub struct OutboundSa {
    /// SPI.
    pub spi: u32,
    pub(crate) crypto: SaCrypto,
    seq: AtomicU64,
    /// Held by the worker that is numbering and sending this SA's packets
    /// ([`OutboundSa::send_turn`]).
    sending: Mutex<()>,
    /// Inner bytes sent through this SA (for byte lifetimes).
    pub bytes: AtomicU64,
    /// Packets sent through this SA.
    pub packets: AtomicU64,
    /// Where to send: the facility's current NAT-T address, which follows
    /// NAT mapping changes (RFC 7296 §2.23).
    remote: ArcSwap<SocketAddr>,
    /// Hub-side selectors.
    pub local_ts: Vec<Selector>,
    /// Facility-side selectors.
    pub remote_ts: Vec<Selector>,
    /// The facility's counters.
    pub counters: Arc<Counters>,
    /// The facility's tunnel MTU.
    pub mtu: Arc<TunnelMtu>,
    /// The facility's name (for logs and path MTU reports).
    pub peer: Arc<str>,
}

impl OutboundSa {
    /// Where packets of this SA go now.
    pub fn remote(&self) -> SocketAddr {
        **self.remote.load()
    }

    /// This SA's turn to number and send packets. The outbound workers read
    /// different TUN queues, so one facility's packets can reach two
    /// workers at once; a worker holds the turn of every SA in its batch
    /// from the first sequence number it takes until its trains are handed
    /// to the kernel, so that each SA's packets leave in sequence-number
    /// order. Unordered, a batch of up to 128 packets sent after a later
    /// one would fall behind the facility's replay window (32 packets by
    /// default in strongSwan and Linux) and be dropped there as replays.
    pub fn send_turn(&self) -> MutexGuard<'_, ()> {
        self.sending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the next sequence number; `None` once the space is used up:
    /// 2^32 - 1, or 2^64 - 1 with ESN (RFC 4303 §3.3.3: the counter must
    /// not cycle). A compare-and-swap loop rather than an add, so that the
    /// counter stops at the limit instead of wrapping back to numbers
    /// already sent.
    pub fn next_seq(&self) -> Option<u64> {
        let limit = if self.crypto.esn() {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        self.seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                s.checked_add(1).filter(|&next| next <= limit)
            })
            .ok()
            .and_then(|s| s.checked_add(1))
    }

    /// Makes `last` the last sequence number taken (tests start SAs near
    /// the 2^32 boundary with it).
    #[cfg(test)]
    pub(crate) fn skip_to(&self, last: u64) {
        self.seq.store(last, Ordering::Relaxed);
    }
}

/// One consistent view of all SAs. Its maps are sharded (`crate::shard`),
/// so that the copy the writer makes per change shares all but a few
/// shards with the published one.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    inbound: Sharded<u32, Arc<InboundSa>>,
    /// Outbound SAs carrying traffic by SPI, each with when it began to:
    /// for a prefix several SAs cover (a rekey in progress), the latest
    /// wins.
    outbound_sas: Sharded<u32, (u64, Arc<OutboundSa>)>,
    /// Outbound SAs of rekeys we answered, each waiting for the removal of
    /// the inbound SPI it replaces before it carries traffic.
    pending_outbound: Vec<(u32, Arc<OutboundSa>)>,
    outbound: PrefixMap<Arc<OutboundSa>>,
    /// Outbound SAs activated so far (orders `outbound_sas`).
    activations: u64,
}

impl Snapshot {
    /// Lets an outbound SA carry traffic: it becomes the latest for its
    /// prefixes.
    fn activate(&mut self, sa: Arc<OutboundSa>) {
        self.activations += 1;
        for ts in &sa.remote_ts {
            for (addr, len) in ts.prefixes() {
                self.outbound.insert(addr, len, sa.clone());
            }
        }
        self.outbound_sas.insert(sa.spi, (self.activations, sa));
    }

    /// Stops an outbound SA carrying traffic; the SA activated before it
    /// for a prefix (if any) takes the prefix back.
    fn deactivate(&mut self, spi_out: u32) {
        if let Some((_, sa)) = self.outbound_sas.remove(&spi_out) {
            for ts in &sa.remote_ts {
                for (addr, len) in ts.prefixes() {
                    self.outbound
                        .remove(addr, len, |other| Arc::ptr_eq(other, &sa));
                }
            }
        }
    }

    /// The routes computed from scratch (what the incremental ones must
    /// equal; a test checks).
    #[cfg(test)]
    fn rebuild_routes(&mut self) {
        let mut active: Vec<_> = self.outbound_sas.iter().map(|(_, v)| v.clone()).collect();
        active.sort_by_key(|(order, _)| *order);
        let mut map = PrefixMap::default();
        for (_, sa) in active {
            for ts in &sa.remote_ts {
                for (addr, len) in ts.prefixes() {
                    map.insert(addr, len, sa.clone());
                }
            }
        }
        self.outbound = map;
    }
}

impl Snapshot {
    /// The inbound SA for an SPI.
    pub fn inbound(&self, spi: u32) -> Option<&Arc<InboundSa>> {
        self.inbound.get(&spi)
    }

    /// The outbound SA carrying traffic with SPI `spi` (to find whose a
    /// sealed packet was).
    pub fn outbound_by_spi(&self, spi: u32) -> Option<&Arc<OutboundSa>> {
        self.outbound_sas.get(&spi).map(|(_, sa)| sa)
    }

    /// The outbound SA whose facility-side selectors contain `dst` most
    /// specifically.
    pub fn outbound(&self, dst: std::net::IpAddr) -> Option<&Arc<OutboundSa>> {
        self.outbound.lookup(dst)
    }

    /// Number of inbound SAs.
    pub fn len(&self) -> usize {
        self.inbound.len()
    }

    /// Whether there are no SAs.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }
}

/// The SA database shared by the control plane and the workers.
#[derive(Debug, Default)]
pub struct SaTable {
    current: ArcSwap<Snapshot>,
    writer: Mutex<HashMap<String, Facility>>,
    /// Counters of packets that belong to no facility.
    pub global: Counters,
}

impl SaTable {
    /// An empty table.
    pub fn new() -> SaTable {
        SaTable::default()
    }

    /// The current snapshot; hold it for one batch.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    fn writer(&self) -> MutexGuard<'_, HashMap<String, Facility>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn facility<'a>(map: &'a mut HashMap<String, Facility>, peer: &str) -> &'a Facility {
        map.entry(peer.to_string()).or_insert_with(|| Facility {
            name: peer.into(),
            counters: Arc::default(),
            mtu: Arc::default(),
        })
    }

    /// The counters of a facility (created on first use).
    pub fn counters(&self, peer: &str) -> Arc<Counters> {
        Self::facility(&mut self.writer(), peer).counters.clone()
    }

    /// The tunnel MTU of a facility (created on first use; until
    /// configured, only the TUN device's MTU limits it).
    pub fn mtu(&self, peer: &str) -> Arc<TunnelMtu> {
        Self::facility(&mut self.writer(), peer).mtu.clone()
    }

    /// Installs both directions of a Child SA. The new outbound SA takes
    /// over its prefixes at once; the inbound SA is added beside any older
    /// one, so packets in flight on the old SA are still accepted.
    pub fn install(&self, spec: &ChildSaSpec) -> Result<(), KeyError> {
        self.install_after(spec, None)
    }

    /// Installs a Child SA that replaces the one whose inbound SPI is
    /// `old_spi_in`, in a rekey the peer initiated. Its inbound direction
    /// works at once; its outbound direction waits until the old SA is
    /// removed (the peer deletes it once our answer has arrived and it has
    /// installed its own inbound SA). Sending on the new SA earlier races
    /// the answer: the peer's kernel would drop what arrives before it has
    /// the SA. strongSwan does the same as a rekey responder. If the old SA
    /// is already gone, the outbound direction works at once.
    pub fn install_replacing(&self, spec: &ChildSaSpec, old_spi_in: u32) -> Result<(), KeyError> {
        self.install_after(spec, Some(old_spi_in))
    }

    fn install_after(&self, spec: &ChildSaSpec, old_spi_in: Option<u32>) -> Result<(), KeyError> {
        let inbound_crypto = SaCrypto::new(
            spec.cipher,
            spec.integrity,
            &spec.encr_in,
            &spec.integ_in,
            spec.esn,
        )?;
        let outbound_crypto = SaCrypto::new(
            spec.cipher,
            spec.integrity,
            &spec.encr_out,
            &spec.integ_out,
            spec.esn,
        )?;
        let mut facilities = self.writer();
        let facility = Self::facility(&mut facilities, &spec.peer);
        let (counters, mtu, peer) = (
            facility.counters.clone(),
            facility.mtu.clone(),
            facility.name.clone(),
        );
        let inbound = Arc::new(InboundSa {
            spi: spec.spi_in,
            crypto: inbound_crypto,
            replay: ReplayWindow::default(),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            local_ts: spec.local_ts.clone(),
            remote_ts: spec.remote_ts.clone(),
            counters: counters.clone(),
            mtu: mtu.clone(),
        });
        let outbound = Arc::new(OutboundSa {
            spi: spec.spi_out,
            crypto: outbound_crypto,
            seq: AtomicU64::new(0),
            sending: Mutex::new(()),
            bytes: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            remote: ArcSwap::from_pointee(spec.remote),
            local_ts: spec.local_ts.clone(),
            remote_ts: spec.remote_ts.clone(),
            counters,
            mtu,
            peer,
        });
        let mut next = Snapshot::clone(&self.current.load());
        next.inbound.insert(spec.spi_in, inbound);
        // A reinstall of an outbound SPI replaces the SA.
        next.deactivate(spec.spi_out);
        next.pending_outbound
            .retain(|(_, sa)| sa.spi != spec.spi_out);
        match old_spi_in {
            Some(old) if next.inbound.contains_key(&old) => {
                next.pending_outbound.push((old, outbound));
            }
            _ => next.activate(outbound),
        }
        self.current.store(Arc::new(next));
        Ok(())
    }

    /// Bytes carried by a Child SA in both directions so far.
    pub fn sa_bytes(&self, spi_in: u32, spi_out: u32) -> u64 {
        let snap = self.current.load();
        let inbound = snap
            .inbound
            .get(&spi_in)
            .map_or(0, |sa| sa.bytes.load(Ordering::Relaxed));
        let outbound = snap
            .outbound_sas
            .get(&spi_out)
            .map_or(0, |(_, sa)| sa.bytes.load(Ordering::Relaxed));
        inbound + outbound
    }

    /// What one Child SA has carried so far, as the data plane counted
    /// it (inner bytes and packets delivered in, sealed out). An SA not
    /// installed (or an outbound SA still waiting to carry traffic) counts
    /// zero.
    pub fn sa_counters(&self, spi_in: u32, spi_out: u32) -> SaCounters {
        let snap = self.current.load();
        let mut c = SaCounters::default();
        if let Some(sa) = snap.inbound.get(&spi_in) {
            c.bytes_in = sa.bytes.load(Ordering::Relaxed);
            c.packets_in = sa.packets.load(Ordering::Relaxed);
        }
        let out = snap
            .outbound_sas
            .get(&spi_out)
            .map(|(_, sa)| sa)
            .or_else(|| {
                snap.pending_outbound
                    .iter()
                    .find(|(_, sa)| sa.spi == spi_out)
                    .map(|(_, sa)| sa)
            });
        if let Some(sa) = out {
            c.bytes_out = sa.bytes.load(Ordering::Relaxed);
            c.packets_out = sa.packets.load(Ordering::Relaxed);
        }
        c
    }

    /// Sends a Child SA's packets to a new address from now on (the
    /// facility's NAT mapping changed). False if no such SA.
    pub fn update_remote(&self, spi_out: u32, remote: SocketAddr) -> bool {
        let snap = self.current.load();
        let active = snap.outbound_sas.get(&spi_out).map(|(_, sa)| sa);
        match active.or_else(|| {
            snap.pending_outbound
                .iter()
                .map(|(_, sa)| sa)
                .find(|sa| sa.spi == spi_out)
        }) {
            Some(sa) => {
                sa.remote.store(Arc::new(remote));
                true
            }
            None => false,
        }
    }

    /// Removes a Child SA (both directions).
    pub fn remove(&self, spi_in: u32, spi_out: u32) {
        let _guard = self.writer();
        let mut next = Snapshot::clone(&self.current.load());
        next.inbound.remove(&spi_in);
        next.deactivate(spi_out);
        next.pending_outbound.retain(|(_, sa)| sa.spi != spi_out);
        // Successors that waited for this SA to go now carry its traffic.
        let (ready, waiting) = std::mem::take(&mut next.pending_outbound)
            .into_iter()
            .partition::<Vec<_>, _>(|(old, _)| *old == spi_in);
        next.pending_outbound = waiting;
        for (_, sa) in ready {
            next.activate(sa);
        }
        self.current.store(Arc::new(next));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::packet::Cipher;
    use crate::selector::Selector;

    fn spec(spi_in: u32, spi_out: u32, first: [u8; 4], last: [u8; 4]) -> ChildSaSpec {
        ChildSaSpec {
            peer: format!("p{}", spi_out % 7),
            spi_in,
            spi_out,
            cipher: Cipher::AesGcm16(128),
            integrity: None,
            esn: spi_in.is_multiple_of(2),
            encr_in: Zeroizing::new(vec![1; 20]),
            integ_in: Zeroizing::new(vec![]),
            encr_out: Zeroizing::new(vec![2; 20]),
            integ_out: Zeroizing::new(vec![]),
            local_ts: vec![],
            remote_ts: vec![Selector {
                start: first.into(),
                end: last.into(),
                protocol: 0,
                start_port: 0,
                end_port: 65535,
            }],
            remote: "192.0.2.2:4500".parse().unwrap(),
        }
    }

    /// The routes kept up to date install by install are the ones a full
    /// rebuild gives, through reinstalls, rekeys and removals.
    #[test]
    fn incremental_routes_match_a_rebuild() {
        let table = SaTable::new();
        let mut x: u32 = 12345;
        let mut rand = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        };
        let mut live: Vec<(u32, u32)> = Vec::new();
        for step in 0..600u32 {
            match rand(10) {
                0..=5 => {
                    // Overlapping ranges inside 198.51.100.0/24.
                    let a = rand(256) as u8;
                    let b = a.saturating_add(rand(40) as u8);
                    let spi_out = if rand(5) == 0 && !live.is_empty() {
                        live[rand(live.len() as u32) as usize].1 // a reinstall
                    } else {
                        1000 + step
                    };
                    let s = spec(5000 + step, spi_out, [198, 51, 100, a], [198, 51, 100, b]);
                    if rand(4) == 0 && !live.is_empty() {
                        let old = live[rand(live.len() as u32) as usize].0;
                        table.install_replacing(&s, old).unwrap();
                    } else {
                        table.install(&s).unwrap();
                    }
                    live.push((s.spi_in, s.spi_out));
                }
                _ if !live.is_empty() => {
                    let (i, o) = live.remove(rand(live.len() as u32) as usize);
                    table.remove(i, o);
                }
                _ => {}
            }
            let snap = table.snapshot();
            let mut rebuilt = Snapshot::clone(&snap);
            rebuilt.rebuild_routes();
            for last in 0..=255u8 {
                let dst = std::net::IpAddr::from([198, 51, 100, last]);
                assert_eq!(
                    snap.outbound(dst).map(|sa| sa.spi),
                    rebuilt.outbound(dst).map(|sa| sa.spi),
                    "step {step}, {dst}"
                );
            }
        }
        // Removing every SA leaves nothing behind, not even empty prefixes.
        for (i, o) in live {
            table.remove(i, o);
        }
        let snap = table.snapshot();
        assert!(snap.is_empty() && snap.outbound.is_empty() && snap.outbound_sas.is_empty());
        assert!(snap.pending_outbound.is_empty());
    }
}
