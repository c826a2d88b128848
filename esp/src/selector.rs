//! Traffic selectors in the data plane: what an SA may carry, and the
//! longest-prefix match that picks the outbound SA for a packet.

use crate::shard::Sharded;
use crate::wire::{IpPacket, Ports};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One selector: an address range, an IP protocol (0 = any) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    /// First address.
    pub start: IpAddr,
    /// Last address, same family.
    pub end: IpAddr,
    /// IP protocol, 0 for any.
    pub protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Selector {
    fn contains_addr(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(a))
    }

    fn any_port(&self) -> bool {
        self.start_port == 0 && self.end_port == u16::MAX
    }

    /// Whether an address (with protocol and port, when known) is covered.
    pub fn matches(&self, addr: IpAddr, protocol: u8, port: Option<u16>) -> bool {
        if !self.contains_addr(addr) {
            return false;
        }
        if self.protocol != 0 && self.protocol != protocol {
            return false;
        }
        self.any_port() || port.is_some_and(|p| (self.start_port..=self.end_port).contains(&p))
    }

    /// The CIDR prefixes that exactly cover the address range.
    pub fn prefixes(&self) -> Vec<(IpAddr, u8)> {
        let width: u32 = if self.start.is_ipv4() { 32 } else { 128 };
        let (mut lo, hi) = (to_u128(self.start), to_u128(self.end));
        let mut out = Vec::new();
        if lo > hi || self.start.is_ipv4() != self.end.is_ipv4() {
            return out;
        }
        loop {
            // Largest aligned block starting at lo that does not pass hi.
            let mut bits = if lo == 0 {
                width
            } else {
                lo.trailing_zeros().min(width)
            };
            while bits > 0 && {
                let span = if bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << bits) - 1
                };
                lo.checked_add(span).is_none_or(|end| end > hi)
            } {
                bits -= 1;
            }
            out.push((from_u128(lo, self.start), (width - bits) as u8));
            let span = if bits == 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            match lo.checked_add(span) {
                Some(end) if end < hi => lo = end + 1,
                _ => break,
            }
        }
        out
    }
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The fields of an inner packet that selectors look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol.
    pub protocol: u8,
    /// Source port (TCP, UDP, SCTP, unfragmented or first fragment).
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
}

fn ports(protocol: u8, l4: &[u8]) -> (Option<u16>, Option<u16>) {
    use crate::wire::protocol::{SCTP, TCP, UDP, UDPLITE};
    match Ports::new_checked(l4) {
        Ok(p) if matches!(protocol, TCP | UDP | SCTP | UDPLITE) => {
            (Some(p.src_port()), Some(p.dst_port()))
        }
        _ => (None, None),
    }
}

impl Flow {
    /// Parses an IPv4 or IPv6 packet's header; `None` if it is not one, or
    /// if its length field does not fit the buffer.
    pub fn parse(packet: &[u8]) -> Option<Flow> {
        let ip = IpPacket::new_checked(packet).ok()?;
        let l4 = ip.payload()?;
        let protocol = ip.protocol();
        // Only an IPv4 packet's first fragment has ports.
        let (src_port, dst_port) = match &ip {
            IpPacket::V4(v4) if v4.frag_offset() != 0 => (None, None),
            _ => ports(protocol, l4),
        };
        Some(Flow {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            protocol,
            src_port,
            dst_port,
        })
    }
}

/// Whether a flow is allowed through an SA whose local side is `local` and
/// remote side `remote`, seen from the hub in direction `inbound`.
pub fn flow_allowed(flow: &Flow, local: &[Selector], remote: &[Selector], inbound: bool) -> bool {
    let (from, to) = if inbound {
        (remote, local)
    } else {
        (local, remote)
    };
    from.iter()
        .any(|s| s.matches(flow.src, flow.protocol, flow.src_port))
        && to
            .iter()
            .any(|s| s.matches(flow.dst, flow.protocol, flow.dst_port))
}

/// Longest-prefix match from destination prefixes to values. A prefix may
/// hold several values (SAs of one facility during a rekey); the one
/// inserted last is the one found, and removing it uncovers the one
/// before. Per prefix length one [`Sharded`] map, so a changed copy shares
/// most of its memory with the original.
#[derive(Debug, Clone)]
pub struct PrefixMap<T> {
    /// Per family, (prefix length, masked address → values), longest first.
    v4: Vec<(u8, Sharded<u128, Vec<T>>)>,
    v6: Vec<(u8, Sharded<u128, Vec<T>>)>,
}

impl<T> Default for PrefixMap<T> {
    fn default() -> Self {
        PrefixMap {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask(addr: IpAddr, len: u8) -> u128 {
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let host = u32::from(width - len.min(width));
    let v = to_u128(addr);
    if host >= 128 {
        0
    } else {
        v & !((1u128 << host) - 1)
    }
}

impl<T: Clone> PrefixMap<T> {
    /// Adds a value for a prefix, in front of any it already has.
    pub fn insert(&mut self, addr: IpAddr, len: u8, value: T) {
        let table = if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let i = match table.iter().position(|(l, _)| *l <= len) {
            Some(i) if table[i].0 == len => i,
            Some(i) => {
                table.insert(i, (len, Sharded::default()));
                i
            }
            None => {
                table.push((len, Sharded::default()));
                table.len() - 1
            }
        };
        let key = mask(addr, len);
        table[i]
            .1
            .shard_mut(&key)
            .entry(key)
            .or_default()
            .push(value);
    }

    /// Removes the values of a prefix for which `gone` is true.
    pub fn remove(&mut self, addr: IpAddr, len: u8, gone: impl Fn(&T) -> bool) {
        let table = if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        };
        let Some(i) = table.iter().position(|(l, _)| *l == len) else {
            return;
        };
        let key = mask(addr, len);
        if !table[i].1.get(&key).is_some_and(|v| v.iter().any(&gone)) {
            return;
        }
        let shard = table[i].1.shard_mut(&key);
        if let Some(values) = shard.get_mut(&key) {
            values.retain(|v| !gone(v));
            if values.is_empty() {
                shard.remove(&key);
            }
        }
        if table[i].1.is_empty() {
            table.remove(i);
        }
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let table = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        table
            .iter()
            .find_map(|(len, m)| m.get(&mask(addr, *len)).and_then(|v| v.last()))
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.v4
            .iter()
            .chain(self.v6.iter())
            .map(|(_, m)| m.len())
            .sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(a: &str, b: &str) -> Selector {
        Selector {
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
            protocol: 0,
            start_port: 0,
            end_port: 65535,
        }
    }

    #[test]
    fn ranges_decompose_into_prefixes() {
        let p = sel("198.51.100.0", "198.51.100.255").prefixes();
        assert_eq!(p, vec![("198.51.100.0".parse().unwrap(), 24)]);
        let p = sel("198.51.100.1", "198.51.100.6").prefixes();
        let lens: Vec<u8> = p.iter().map(|x| x.1).collect();
        assert_eq!(lens, vec![32, 31, 31, 32]);
        assert_eq!(
            sel("0.0.0.0", "255.255.255.255").prefixes(),
            vec![("0.0.0.0".parse().unwrap(), 0)]
        );
        assert_eq!(
            sel("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").prefixes(),
            vec![("::".parse().unwrap(), 0)]
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let mut m = PrefixMap::default();
        m.insert("198.51.100.0".parse().unwrap(), 24, 1);
        m.insert("198.51.100.128".parse().unwrap(), 25, 2);
        m.insert("0.0.0.0".parse().unwrap(), 0, 3);
        assert_eq!(m.lookup("198.51.100.1".parse().unwrap()), Some(&1));
        assert_eq!(m.lookup("198.51.100.200".parse().unwrap()), Some(&2));
        assert_eq!(m.lookup("192.0.2.1".parse().unwrap()), Some(&3));
        assert_eq!(m.lookup("2001:db8::1".parse().unwrap()), None);
        m.remove("198.51.100.128".parse().unwrap(), 25, |v| *v == 2);
        assert_eq!(m.lookup("198.51.100.200".parse().unwrap()), Some(&1));
        assert_eq!(m.len(), 2);
        // A prefix with two values: the later wins until it goes.
        m.insert("198.51.100.0".parse().unwrap(), 24, 4);
        assert_eq!(m.lookup("198.51.100.1".parse().unwrap()), Some(&4));
        m.remove("198.51.100.0".parse().unwrap(), 24, |v| *v == 4);
        assert_eq!(m.lookup("198.51.100.1".parse().unwrap()), Some(&1));
        m.remove("198.51.100.0".parse().unwrap(), 24, |v| *v == 1);
        m.remove("0.0.0.0".parse().unwrap(), 0, |v| *v == 3);
        assert!(m.is_empty());
        assert_eq!(m.lookup("198.51.100.1".parse().unwrap()), None);
    }

    #[test]
    fn flows_parse_and_match() {
        // IPv4 UDP 198.51.100.1:1000 → 203.0.113.1:53
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 51, 100, 1, 203, 0, 113, 1,
        ];
        p.extend_from_slice(&[0x03, 0xe8, 0, 53, 0, 8, 0, 0]);
        let f = Flow::parse(&p).unwrap();
        assert_eq!(
            (f.protocol, f.src_port, f.dst_port),
            (17, Some(1000), Some(53))
        );
        let local = [sel("203.0.113.0", "203.0.113.127")];
        let remote = [sel("198.51.100.0", "198.51.100.63")];
        assert!(flow_allowed(&f, &local, &remote, true));
        assert!(!flow_allowed(&f, &local, &remote, false));
        p[15] = 200; // source outside the facility's prefix
        assert!(!flow_allowed(
            &Flow::parse(&p).unwrap(),
            &local,
            &remote,
            true
        ));
        assert!(Flow::parse(&p[..10]).is_none());
        assert!(Flow::parse(&[0x60; 39]).is_none());
        p[3] = 200; // total length beyond the buffer
        assert!(Flow::parse(&p).is_none());
    }
}
