//! Payloads (RFC 7296 §3.2–§3.14) and payload chains.

use super::{
    len16, AuthMethod, KeId, NotifyType, PayloadType, Proposal, ProtocolId, Reader, TsType,
    WireError,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const GENERIC_HEADER_LEN: usize = 4;
const CRITICAL: u8 = 0x80;
/// A Notify payload (RFC 7296 §3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Protocol of the SA concerned, or `None`.
    pub protocol: ProtocolId,
    /// SPI of the SA concerned, often empty.
    pub spi: Vec<u8>,
    /// Notify message type.
    pub kind: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notification that concerns no particular SA.
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Notify {
        Notify {
            protocol: ProtocolId::None,
            spi: Vec::new(),
            kind,
            data,
        }
    }
}

/// A Delete payload (RFC 7296 §3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// IKE (no SPIs: the IKE SA the message travels on) or ESP.
    pub protocol: ProtocolId,
    /// SPI size: 0 for IKE, 4 for ESP.
    pub spi_size: u8,
    /// SPIs of the SAs deleted, each `spi_size` bytes.
    pub spis: Vec<Vec<u8>>,
}

/// One traffic selector (RFC 7296 §3.13.1): an address range, an IP
/// protocol (0 = any) and a port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol number, 0 for any.
    pub ip_protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address (same family as `start`).
    pub end: IpAddr,
}

impl TrafficSelector {
    fn parse(r: &mut Reader<'_>) -> Result<TrafficSelector, WireError> {
        let ts_type = TsType::from(r.u8()?);
        let ip_protocol = r.u8()?;
        let len = r.u16()? as usize;
        let addr_len = match ts_type {
            TsType::Ipv4AddrRange => 4,
            TsType::Ipv6AddrRange => 16,
            TsType::Unknown(_) => {
                return Err(WireError::Malformed("unsupported traffic selector type"))
            }
        };
        if len != 8 + 2 * addr_len {
            return Err(WireError::Malformed("traffic selector length"));
        }
        let start_port = r.u16()?;
        let end_port = r.u16()?;
        let addr = |r: &mut Reader<'_>| -> Result<IpAddr, WireError> {
            let b = r.take(addr_len)?;
            Ok(match <[u8; 4]>::try_from(b) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => {
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(b);
                    IpAddr::V6(Ipv6Addr::from(v6))
                }
            })
        };
        let start = addr(r)?;
        let end = addr(r)?;
        Ok(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let (ts_type, len) = match (self.start, self.end) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (TsType::Ipv4AddrRange, 16u16),
            (IpAddr::V6(_), IpAddr::V6(_)) => (TsType::Ipv6AddrRange, 40u16),
            _ => {
                return Err(WireError::Malformed(
                    "traffic selector mixes address families",
                ))
            }
        };
        out.push(ts_type.into());
        out.push(self.ip_protocol);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        for a in [self.start, self.end] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
        Ok(())
    }
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association (§3.3).
    Sa(Vec<Proposal>),
    /// Key Exchange (§3.4).
    Ke {
        /// The key exchange method.
        group: KeId,
        /// The public value.
        data: Vec<u8>,
    },
    /// Initiator's identification (§3.5).
    IdI {
        /// ID type.
        id_type: u8,
        /// The three RESERVED octets as received (zero when we send). They
        /// are kept because AUTH covers the ID payload as it was on the
        /// wire (RFC 7296 §2.15), whatever a sender put there.
        reserved: [u8; 3],
        /// ID data.
        data: Vec<u8>,
    },
    /// Responder's identification (§3.5).
    IdR {
        /// ID type.
        id_type: u8,
        /// The three RESERVED octets as received, as in [`Payload::IdI`].
        reserved: [u8; 3],
        /// ID data.
        data: Vec<u8>,
    },
    /// Certificate (§3.6).
    Cert {
        /// Certificate encoding.
        encoding: u8,
        /// Certificate data.
        data: Vec<u8>,
    },
    /// Certificate request (§3.7).
    CertReq {
        /// Certificate encoding.
        encoding: u8,
        /// Certification authority hashes.
        data: Vec<u8>,
    },
    /// Authentication (§3.8).
    Auth {
        /// Authentication method.
        method: AuthMethod,
        /// Authentication data.
        data: Vec<u8>,
    },
    /// Nonce (§3.9).
    Nonce(Vec<u8>),
    /// Notify (§3.10).
    Notify(Notify),
    /// Delete (§3.11).
    Delete(Delete),
    /// Vendor ID (§3.12).
    VendorId(Vec<u8>),
    /// Initiator's traffic selectors (§3.13).
    TsI(Vec<TrafficSelector>),
    /// Responder's traffic selectors (§3.13).
    TsR(Vec<TrafficSelector>),
    /// Encrypted and authenticated (§3.14), still sealed: IV, ciphertext, ICV.
    Sk {
        /// Type of the first payload inside.
        first_inner: PayloadType,
        /// IV, ciphertext and integrity checksum.
        data: Vec<u8>,
    },
    /// Encrypted and authenticated fragment (RFC 7383 §2.5), still sealed.
    Skf {
        /// Type of the first inner payload (fragment 1), else `NoNext`.
        first_inner: PayloadType,
        /// Fragment number, from 1.
        number: u16,
        /// Number of fragments of the message.
        total: u16,
        /// IV, ciphertext and integrity checksum.
        data: Vec<u8>,
    },
    /// A payload renkei does not process (CP, EAP, or an unknown
    /// non-critical type), kept as it arrived.
    Unknown {
        /// Payload type.
        kind: PayloadType,
        /// The critical bit.
        critical: bool,
        /// Payload body.
        data: Vec<u8>,
    },
}

impl Payload {
    /// The payload type.
    pub fn kind(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::Sa,
            Payload::Ke { .. } => PayloadType::Ke,
            Payload::IdI { .. } => PayloadType::IdI,
            Payload::IdR { .. } => PayloadType::IdR,
            Payload::Cert { .. } => PayloadType::Cert,
            Payload::CertReq { .. } => PayloadType::CertReq,
            Payload::Auth { .. } => PayloadType::Auth,
            Payload::Nonce(_) => PayloadType::Nonce,
            Payload::Notify(_) => PayloadType::Notify,
            Payload::Delete(_) => PayloadType::Delete,
            Payload::VendorId(_) => PayloadType::VendorId,
            Payload::TsI(_) => PayloadType::TsI,
            Payload::TsR(_) => PayloadType::TsR,
            Payload::Sk { .. } => PayloadType::Sk,
            Payload::Skf { .. } => PayloadType::Skf,
            Payload::Unknown { kind, .. } => *kind,
        }
    }

    fn parse_body(
        kind: PayloadType,
        critical: bool,
        r: &mut Reader<'_>,
    ) -> Result<Payload, WireError> {
        let p = match kind {
            PayloadType::Sa => {
                let mut proposals = Vec::new();
                loop {
                    let more = r.u8()?;
                    let _reserved = r.u8()?;
                    let len = r.u16()? as usize;
                    if len < 8 {
                        return Err(WireError::Malformed("proposal shorter than 8 bytes"));
                    }
                    let mut body = r.sub(len - 4)?;
                    proposals.push(Proposal::parse(&mut body)?);
                    match more {
                        0 => break,
                        2 => continue,
                        _ => return Err(WireError::Malformed("proposal last/more flag")),
                    }
                }
                Payload::Sa(proposals)
            }
            PayloadType::Ke => {
                let group = KeId::from(r.u16()?);
                let _reserved = r.u16()?;
                Payload::Ke {
                    group,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::IdI | PayloadType::IdR => {
                let id_type = r.u8()?;
                // RFC 7296 §3.5: RESERVED "MUST be ignored on receipt" —
                // ignored for meaning, but kept, since §2.15 has AUTH
                // computed over the ID payload's octets as sent.
                let reserved = [r.u8()?, r.u8()?, r.u8()?];
                let data = r.rest().to_vec();
                if kind == PayloadType::IdI {
                    Payload::IdI {
                        id_type,
                        reserved,
                        data,
                    }
                } else {
                    Payload::IdR {
                        id_type,
                        reserved,
                        data,
                    }
                }
            }
            PayloadType::Cert | PayloadType::CertReq => {
                let encoding = r.u8()?;
                let data = r.rest().to_vec();
                if kind == PayloadType::Cert {
                    Payload::Cert { encoding, data }
                } else {
                    Payload::CertReq { encoding, data }
                }
            }
            PayloadType::Auth => {
                let method = AuthMethod::from(r.u8()?);
                let _reserved = r.take(3)?;
                Payload::Auth {
                    method,
                    data: r.rest().to_vec(),
                }
            }
            PayloadType::Nonce => Payload::Nonce(r.rest().to_vec()),
            PayloadType::Notify => {
                let protocol = ProtocolId::from(r.u8()?);
                let spi_size = r.u8()? as usize;
                let kind = NotifyType::from(r.u16()?);
                let spi = r.take(spi_size)?.to_vec();
                Payload::Notify(Notify {
                    protocol,
                    spi,
                    kind,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::Delete => {
                let protocol = ProtocolId::from(r.u8()?);
                let spi_size = r.u8()?;
                let count = r.u16()?;
                let mut spis = Vec::new();
                for _ in 0..count {
                    spis.push(r.take(spi_size as usize)?.to_vec());
                }
                Payload::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            PayloadType::VendorId => Payload::VendorId(r.rest().to_vec()),
            PayloadType::TsI | PayloadType::TsR => {
                let count = r.u8()?;
                let _reserved = r.take(3)?;
                let mut list = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    list.push(TrafficSelector::parse(r)?);
                }
                if kind == PayloadType::TsI {
                    Payload::TsI(list)
                } else {
                    Payload::TsR(list)
                }
            }
            PayloadType::Unknown(t) if critical => return Err(WireError::UnsupportedCritical(t)),
            other => Payload::Unknown {
                kind: other,
                critical,
                data: r.rest().to_vec(),
            },
        };
        r.finish()?;
        Ok(p)
    }

    fn emit_body(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Payload::Sa(proposals) => {
                for (i, p) in proposals.iter().enumerate() {
                    p.emit(i + 1 == proposals.len(), out)?;
                }
            }
            Payload::Ke { group, data } => {
                out.extend_from_slice(&u16::from(*group).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI {
                id_type,
                reserved,
                data,
            }
            | Payload::IdR {
                id_type,
                reserved,
                data,
            } => {
                out.push(*id_type);
                out.extend_from_slice(reserved);
                out.extend_from_slice(data);
            }
            Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
                out.push(*encoding);
                out.extend_from_slice(data);
            }
            Payload::Auth { method, data } => {
                out.extend_from_slice(&[(*method).into(), 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(data) | Payload::VendorId(data) => out.extend_from_slice(data),
            Payload::Notify(n) => {
                out.push(n.protocol.into());
                out.push(u8::try_from(n.spi.len()).map_err(|_| WireError::Malformed("SPI"))?);
                out.extend_from_slice(&u16::from(n.kind).to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                out.push(d.protocol.into());
                out.push(d.spi_size);
                out.extend_from_slice(&len16(d.spis.len())?.to_be_bytes());
                for spi in &d.spis {
                    if spi.len() != d.spi_size as usize {
                        return Err(WireError::Malformed("delete SPI size"));
                    }
                    out.extend_from_slice(spi);
                }
            }
            Payload::TsI(list) | Payload::TsR(list) => {
                out.push(u8::try_from(list.len()).map_err(|_| WireError::Malformed("TS count"))?);
                out.extend_from_slice(&[0, 0, 0]);
                for ts in list {
                    ts.emit(out)?;
                }
            }
            Payload::Skf {
                number,
                total,
                data,
                ..
            } => {
                out.extend_from_slice(&number.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(data);
            }
            Payload::Sk { data, .. } | Payload::Unknown { data, .. } => out.extend_from_slice(data),
        }
        Ok(())
    }
}

/// Finding the payloads of a message by type (the first of each).
pub trait PayloadsExt {
    /// The SA payload's proposals.
    fn sa(&self) -> Option<&Vec<Proposal>>;
    /// The KE payload's group and public value.
    fn ke(&self) -> Option<(KeId, &Vec<u8>)>;
    /// The Nonce payload's data.
    fn nonce(&self) -> Option<&Vec<u8>>;
    /// IDi: type, RESERVED octets as received, and data.
    fn id_i(&self) -> Option<(u8, [u8; 3], &Vec<u8>)>;
    /// IDr: type, RESERVED octets as received, and data.
    fn id_r(&self) -> Option<(u8, [u8; 3], &Vec<u8>)>;
    /// AUTH: method and data.
    fn auth(&self) -> Option<(AuthMethod, &Vec<u8>)>;
    /// TSi selectors.
    fn ts_i(&self) -> Option<&Vec<TrafficSelector>>;
    /// TSr selectors.
    fn ts_r(&self) -> Option<&Vec<TrafficSelector>>;
    /// Every Notify payload.
    fn notifies(&self) -> impl Iterator<Item = &Notify>;
}

impl PayloadsExt for [Payload] {
    fn sa(&self) -> Option<&Vec<Proposal>> {
        self.iter().find_map(|p| match p {
            Payload::Sa(v) => Some(v),
            _ => None,
        })
    }
    fn ke(&self) -> Option<(KeId, &Vec<u8>)> {
        self.iter().find_map(|p| match p {
            Payload::Ke { group, data } => Some((*group, data)),
            _ => None,
        })
    }
    fn nonce(&self) -> Option<&Vec<u8>> {
        self.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n),
            _ => None,
        })
    }
    fn id_i(&self) -> Option<(u8, [u8; 3], &Vec<u8>)> {
        self.iter().find_map(|p| match p {
            Payload::IdI {
                id_type,
                reserved,
                data,
            } => Some((*id_type, *reserved, data)),
            _ => None,
        })
    }
    fn id_r(&self) -> Option<(u8, [u8; 3], &Vec<u8>)> {
        self.iter().find_map(|p| match p {
            Payload::IdR {
                id_type,
                reserved,
                data,
            } => Some((*id_type, *reserved, data)),
            _ => None,
        })
    }
    fn auth(&self) -> Option<(AuthMethod, &Vec<u8>)> {
        self.iter().find_map(|p| match p {
            Payload::Auth { method, data } => Some((*method, data)),
            _ => None,
        })
    }
    fn ts_i(&self) -> Option<&Vec<TrafficSelector>> {
        self.iter().find_map(|p| match p {
            Payload::TsI(v) => Some(v),
            _ => None,
        })
    }
    fn ts_r(&self) -> Option<&Vec<TrafficSelector>> {
        self.iter().find_map(|p| match p {
            Payload::TsR(v) => Some(v),
            _ => None,
        })
    }
    fn notifies(&self) -> impl Iterator<Item = &Notify> {
        self.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }
}

/// Decodes a payload chain that starts with a payload of type `first`.
///
/// An Encrypted payload ends the chain (RFC 7296 §3.14: it "MUST be the last
/// payload"); its Next Payload field names the first payload inside it. An
/// unknown payload with the critical bit set fails the whole message
/// (RFC 7296 §2.5); an unknown one without it is kept and ignored.
pub fn parse_chain(first: PayloadType, buf: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut r = Reader::new(buf);
    let mut next = first;
    let mut payloads = Vec::new();
    while next != PayloadType::NoNext {
        let kind = next;
        next = PayloadType::from(r.u8()?);
        let critical = r.u8()? & CRITICAL != 0;
        let len = r.u16()? as usize;
        if len < GENERIC_HEADER_LEN {
            return Err(WireError::Malformed("payload shorter than its header"));
        }
        let mut body = r.sub(len - GENERIC_HEADER_LEN)?;
        if kind == PayloadType::Sk {
            payloads.push(Payload::Sk {
                first_inner: next,
                data: body.rest().to_vec(),
            });
            break;
        }
        if kind == PayloadType::Skf {
            let number = body.u16()?;
            let total = body.u16()?;
            payloads.push(Payload::Skf {
                first_inner: next,
                number,
                total,
                data: body.rest().to_vec(),
            });
            break;
        }
        payloads.push(Payload::parse_body(kind, critical, &mut body)?);
    }
    r.finish()?;
    Ok(payloads)
}

/// Encodes a payload chain; returns the type of its first payload (for the
/// header or the enclosing SK payload) and the bytes.
pub fn emit_chain(payloads: &[Payload]) -> Result<(PayloadType, Vec<u8>), WireError> {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Sk { first_inner, .. } | Payload::Skf { first_inner, .. } => *first_inner,
            _ => payloads
                .get(i + 1)
                .map_or(PayloadType::NoNext, Payload::kind),
        };
        let critical = matches!(p, Payload::Unknown { critical: true, .. });
        let start = out.len();
        out.extend_from_slice(&[next.into(), if critical { CRITICAL } else { 0 }, 0, 0]);
        p.emit_body(&mut out)?;
        let len = len16(out.len() - start)?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    let first = payloads.first().map_or(PayloadType::NoNext, Payload::kind);
    Ok((first, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Transform, TransformType};

    fn sample() -> Vec<Payload> {
        vec![
            Payload::Sa(vec![Proposal {
                number: 1,
                protocol: ProtocolId::Esp,
                spi: vec![1, 2, 3, 4],
                transforms: vec![
                    Transform::with_key_length(TransformType::Encr, 20, 256),
                    Transform::new(TransformType::Esn, 0),
                ],
            }]),
            Payload::Ke {
                group: KeId::Ecp256,
                data: vec![7; 64],
            },
            Payload::Nonce(vec![9; 32]),
            Payload::IdI {
                id_type: 2,
                reserved: [0, 0, 0],
                data: b"a.example".to_vec(),
            },
            Payload::IdR {
                id_type: 2,
                reserved: [0x5a, 0, 0xff],
                data: b"b.example".to_vec(),
            },
            Payload::Auth {
                method: AuthMethod::SharedKeyMic,
                data: vec![1; 32],
            },
            Payload::Notify(Notify::new(NotifyType::InitialContact, vec![])),
            Payload::Delete(Delete {
                protocol: ProtocolId::Esp,
                spi_size: 4,
                spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
            }),
            Payload::VendorId(b"renkei".to_vec()),
            Payload::TsI(vec![TrafficSelector {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start: "198.51.100.0".parse().unwrap(),
                end: "198.51.100.255".parse().unwrap(),
            }]),
            Payload::TsR(vec![TrafficSelector {
                ip_protocol: 6,
                start_port: 80,
                end_port: 80,
                start: "2001:db8::".parse().unwrap(),
                end: "2001:db8::ffff".parse().unwrap(),
            }]),
            Payload::Unknown {
                kind: PayloadType::Unknown(200),
                critical: false,
                data: vec![1, 2, 3],
            },
        ]
    }

    #[test]
    fn chain_round_trip() {
        let payloads = sample();
        let (first, bytes) = emit_chain(&payloads).unwrap();
        assert_eq!(first, PayloadType::Sa);
        assert_eq!(parse_chain(first, &bytes).unwrap(), payloads);
    }

    #[test]
    fn unknown_critical_payload_is_refused() {
        let payloads = vec![Payload::Unknown {
            kind: PayloadType::Unknown(200),
            critical: true,
            data: vec![],
        }];
        let (first, bytes) = emit_chain(&payloads).unwrap();
        assert_eq!(
            parse_chain(first, &bytes),
            Err(WireError::UnsupportedCritical(200))
        );
    }

    #[test]
    fn truncation_and_trailing_bytes_never_panic() {
        let (first, bytes) = emit_chain(&sample()).unwrap();
        for n in 0..bytes.len() {
            assert!(
                parse_chain(first, &bytes[..n]).is_err(),
                "prefix {n} parsed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(parse_chain(first, &longer), Err(WireError::TrailingBytes));
        // Flip every byte in turn: any result is fine, a panic is not.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = parse_chain(first, &b);
        }
    }

    #[test]
    fn skf_round_trips_and_ends_the_chain() {
        let payloads = vec![Payload::Skf {
            first_inner: PayloadType::IdI,
            number: 1,
            total: 3,
            data: vec![7; 40],
        }];
        let (first, bytes) = emit_chain(&payloads).unwrap();
        assert_eq!(first, PayloadType::Skf);
        assert_eq!(parse_chain(first, &bytes).unwrap(), payloads);
        assert!(parse_chain(first, &bytes[..6]).is_err());
    }

    #[test]
    fn sk_ends_the_chain() {
        let payloads = vec![Payload::Sk {
            first_inner: PayloadType::IdI,
            data: vec![0; 40],
        }];
        let (first, bytes) = emit_chain(&payloads).unwrap();
        assert_eq!(first, PayloadType::Sk);
        assert_eq!(parse_chain(first, &bytes).unwrap(), payloads);
    }
}
