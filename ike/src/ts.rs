//! Traffic selectors: the operator's CIDRs, and narrowing (RFC 7296 §2.9).

use crate::wire::TrafficSelector;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP prefix, as the operator writes it (`198.51.100.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetError(pub String);

impl fmt::Display for SubnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SubnetError {}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

fn width(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        32
    } else {
        128
    }
}

impl Subnet {
    /// A subnet; host bits must be zero.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Subnet, SubnetError> {
        if prefix > width(addr) {
            return Err(SubnetError(format!(
                "prefix length /{prefix} is too long for {addr}"
            )));
        }
        let s = Subnet { addr, prefix };
        if s.first() != addr {
            return Err(SubnetError(format!(
                "{addr}/{prefix} has host bits set (did you mean {}/{prefix}?)",
                s.first()
            )));
        }
        Ok(s)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn host_mask(&self) -> u128 {
        let host_bits = u32::from(width(self.addr) - self.prefix);
        if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    /// First address.
    pub fn first(&self) -> IpAddr {
        from_u128(to_u128(self.addr) & !self.host_mask(), self.addr)
    }

    /// Last address.
    pub fn last(&self) -> IpAddr {
        from_u128(to_u128(self.addr) | self.host_mask(), self.addr)
    }

    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && to_u128(ip) & !self.host_mask() == to_u128(self.addr)
    }

    /// Whether two subnets share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && (self.contains(other.addr) || other.contains(self.addr))
    }

    /// The selector covering this subnet, any protocol and port.
    pub fn to_selector(&self) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: self.first(),
            end: self.last(),
        }
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Subnet, SubnetError> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            SubnetError(format!(
                "'{s}' is not an IP prefix (expected e.g. 198.51.100.0/24)"
            ))
        })?;
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| SubnetError(format!("'{s}' has an invalid prefix length")))?,
            None => width(addr),
        };
        Subnet::new(addr, prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated list of CIDRs; refuses an empty list.
pub fn parse_subnets(s: &str) -> Result<Vec<Subnet>, SubnetError> {
    let list: Vec<Subnet> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(SubnetError("no prefix given".into()));
    }
    Ok(list)
}

/// The intersection of two selectors, if not empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if a.start.is_ipv4() != b.start.is_ipv4() || a.end.is_ipv4() != a.start.is_ipv4() {
        return None;
    }
    let start = to_u128(a.start).max(to_u128(b.start));
    let end = to_u128(a.end).min(to_u128(b.end));
    if start > end {
        return None;
    }
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (x, y) if x == y => x,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    if start_port > end_port {
        return None;
    }
    Some(TrafficSelector {
        ip_protocol,
        start_port,
        end_port,
        start: from_u128(start, a.start),
        end: from_u128(end, a.start),
    })
}

/// Narrows a peer's proposed selectors to what is configured
/// (RFC 7296 §2.9): every non-empty intersection, in the peer's order.
pub fn narrow(proposed: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(i) = intersect(p, a) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Whether every selector in `inner` lies within one of `outer`.
pub fn all_within(inner: &[TrafficSelector], outer: &[TrafficSelector]) -> bool {
    inner
        .iter()
        .all(|i| outer.iter().any(|o| intersect(i, o).as_ref() == Some(i)))
}

/// Formats selectors for logs and status: `198.51.100.0/24` where a range is
/// a prefix, `a-b` otherwise, with `[proto/port]` when restricted.
pub fn describe(list: &[TrafficSelector]) -> String {
    list.iter().map(describe_one).collect::<Vec<_>>().join(",")
}

fn describe_one(ts: &TrafficSelector) -> String {
    let (s, e) = (to_u128(ts.start), to_u128(ts.end));
    let w = u32::from(width(ts.start));
    let span = e.wrapping_sub(s);
    let is_prefix =
        s <= e && (span == u128::MAX || (span.wrapping_add(1)).is_power_of_two()) && s & span == 0;
    let mut text = if is_prefix {
        let host_bits = if span == u128::MAX {
            128
        } else {
            span.wrapping_add(1).trailing_zeros()
        };
        format!("{}/{}", ts.start, w - host_bits.min(w))
    } else {
        format!("{}-{}", ts.start, ts.end)
    };
    if ts.ip_protocol != 0 || ts.start_port != 0 || ts.end_port != 65535 {
        text.push_str(&format!(
            "[{}/{}-{}]",
            ts.ip_protocol, ts.start_port, ts.end_port
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> TrafficSelector {
        s.parse::<Subnet>().unwrap().to_selector()
    }

    #[test]
    fn subnets() {
        assert!("198.51.100.0/24".parse::<Subnet>().is_ok());
        assert!("198.51.100.1/24".parse::<Subnet>().is_err());
        assert!("198.51.100.0/33".parse::<Subnet>().is_err());
        assert!("banana".parse::<Subnet>().is_err());
        assert!("2001:db8::/32".parse::<Subnet>().is_ok());
        let a: Subnet = "198.51.100.0/24".parse().unwrap();
        let b: Subnet = "198.51.100.128/25".parse().unwrap();
        let c: Subnet = "203.0.113.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert!("0.0.0.0/0"
            .parse::<Subnet>()
            .unwrap()
            .contains("192.0.2.1".parse().unwrap()));
        assert!(parse_subnets("").is_err());
        assert_eq!(
            parse_subnets("198.51.100.0/24, 2001:db8::/48")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn narrowing() {
        let allowed = [ts("198.51.100.0/26")];
        assert_eq!(
            narrow(&[ts("0.0.0.0/0")], &allowed),
            vec![ts("198.51.100.0/26")]
        );
        assert_eq!(
            narrow(&[ts("198.51.100.0/28")], &allowed),
            vec![ts("198.51.100.0/28")]
        );
        assert!(narrow(&[ts("203.0.113.0/24")], &allowed).is_empty());
        assert!(narrow(&[ts("2001:db8::/32")], &allowed).is_empty());
        assert!(all_within(&[ts("198.51.100.0/28")], &allowed));
        assert!(!all_within(&[ts("198.51.100.0/24")], &allowed));
        assert_eq!(
            describe(&[ts("198.51.100.0/26"), ts("::/0")]),
            "198.51.100.0/26,::/0"
        );
    }
}
