//! The data of the REDIRECT and REDIRECTED_FROM notifications (RFC 5685
//! §9): a gateway identity, then, in an IKE_SA_INIT response only, the
//! initiator's nonce.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | GW Ident Type |  GW Ident Len |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               ~
//! ~                   New Responder GW Identity                   ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~                   Nonce Data (IKE_SA_INIT only)               ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::{GatewayIdType, Notify, NotifyType, Reader, WireError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where a REDIRECT sends the peer: an address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GatewayIdentity {
    /// GW Ident Type 1: four octets.
    Ipv4(Ipv4Addr),
    /// GW Ident Type 2: sixteen octets.
    Ipv6(Ipv6Addr),
    /// GW Ident Type 3: a DNS name, 1–255 octets of letters, digits,
    /// hyphens and dots (no terminating NUL, no trailing dot needed).
    Fqdn(String),
}

impl GatewayIdentity {
    /// An address or a DNS name as an operator writes it; a string that is
    /// neither is refused with the reason.
    pub fn parse(text: &str) -> Result<GatewayIdentity, WireError> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(GatewayIdentity::from(ip));
        }
        check_fqdn(text.as_bytes())?;
        Ok(GatewayIdentity::Fqdn(text.to_string()))
    }

    /// The identity's type on the wire.
    pub fn id_type(&self) -> GatewayIdType {
        match self {
            GatewayIdentity::Ipv4(_) => GatewayIdType::Ipv4,
            GatewayIdentity::Ipv6(_) => GatewayIdType::Ipv6,
            GatewayIdentity::Fqdn(_) => GatewayIdType::Fqdn,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            GatewayIdentity::Ipv4(a) => a.octets().to_vec(),
            GatewayIdentity::Ipv6(a) => a.octets().to_vec(),
            GatewayIdentity::Fqdn(n) => n.as_bytes().to_vec(),
        }
    }
}

impl From<IpAddr> for GatewayIdentity {
    fn from(ip: IpAddr) -> GatewayIdentity {
        match ip {
            IpAddr::V4(a) => GatewayIdentity::Ipv4(a),
            IpAddr::V6(a) => GatewayIdentity::Ipv6(a),
        }
    }
}

impl fmt::Display for GatewayIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayIdentity::Ipv4(a) => a.fmt(f),
            GatewayIdentity::Ipv6(a) => a.fmt(f),
            GatewayIdentity::Fqdn(n) => f.write_str(n),
        }
    }
}

/// A DNS name as RFC 5685 §9 carries it: 1–255 octets, labels of 1–63
/// letters, digits and hyphens separated by dots.
fn check_fqdn(b: &[u8]) -> Result<(), WireError> {
    if b.is_empty() || b.len() > 255 {
        return Err(WireError::Malformed("gateway FQDN length"));
    }
    let name = b.strip_suffix(b".").unwrap_or(b);
    for label in name.split(|c| *c == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err(WireError::Malformed("gateway FQDN label length"));
        }
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        {
            return Err(WireError::Malformed("gateway FQDN character"));
        }
    }
    Ok(())
}

/// The data of a REDIRECT (or REDIRECTED_FROM) notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The gateway the peer is sent to (or, in REDIRECTED_FROM, came from).
    pub gateway: GatewayIdentity,
    /// The initiator's nonce Ni, in a REDIRECT answering IKE_SA_INIT
    /// (RFC 5685 §3); empty in an INFORMATIONAL (§5) or IKE_AUTH (§6).
    pub nonce: Vec<u8>,
}

impl Redirect {
    /// Decodes notification data. An unknown identity type, a length
    /// that does not fit its type or the data, and a malformed name are
    /// refused.
    pub fn parse(data: &[u8]) -> Result<Redirect, WireError> {
        let mut r = Reader::new(data);
        let id_type = GatewayIdType::from(r.u8()?);
        let len = usize::from(r.u8()?);
        let body = r.take(len)?;
        let gateway = match id_type {
            GatewayIdType::Ipv4 => {
                let b = <[u8; 4]>::try_from(body)
                    .map_err(|_| WireError::Malformed("gateway IPv4 address length"))?;
                GatewayIdentity::Ipv4(Ipv4Addr::from(b))
            }
            GatewayIdType::Ipv6 => {
                let b = <[u8; 16]>::try_from(body)
                    .map_err(|_| WireError::Malformed("gateway IPv6 address length"))?;
                GatewayIdentity::Ipv6(Ipv6Addr::from(b))
            }
            GatewayIdType::Fqdn => {
                check_fqdn(body)?;
                // check_fqdn admits ASCII only.
                GatewayIdentity::Fqdn(String::from_utf8_lossy(body).into_owned())
            }
            GatewayIdType::Unknown(_) => {
                return Err(WireError::Malformed("unknown gateway identity type"))
            }
        };
        Ok(Redirect {
            gateway,
            nonce: r.rest().to_vec(),
        })
    }

    /// Encodes notification data.
    pub fn emit(&self) -> Result<Vec<u8>, WireError> {
        let id = self.gateway.bytes();
        if let GatewayIdentity::Fqdn(_) = self.gateway {
            check_fqdn(&id)?;
        }
        let len = u8::try_from(id.len()).map_err(|_| WireError::Malformed("gateway identity"))?;
        let mut out = Vec::with_capacity(2 + id.len() + self.nonce.len());
        out.push(self.gateway.id_type().into());
        out.push(len);
        out.extend_from_slice(&id);
        out.extend_from_slice(&self.nonce);
        Ok(out)
    }

    /// The REDIRECT Notify payload (Protocol ID 0, no SPI).
    pub fn to_notify(&self) -> Result<Notify, WireError> {
        Ok(Notify::new(NotifyType::Redirect, self.emit()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_chain, parse_chain, Payload, PayloadType};

    /// The whole Notify payload, checked byte by byte against RFC 5685
    /// §9 (and RFC 7296 §3.10 for the Notify header).
    #[test]
    fn a_redirect_to_an_ipv4_gateway_is_laid_out_as_the_rfc_draws_it() {
        let r = Redirect {
            gateway: GatewayIdentity::Ipv4(Ipv4Addr::new(192, 0, 2, 2)),
            nonce: Vec::new(),
        };
        let (first, bytes) = emit_chain(&[Payload::Notify(r.to_notify().unwrap())]).unwrap();
        assert_eq!(first, PayloadType::Notify);
        assert_eq!(
            bytes,
            [
                0, 0, 0, 14, // next payload none, not critical, length 14
                0, 0, 0x40, 0x17, // protocol 0, SPI size 0, type 16407
                1, 4, 192, 0, 2, 2, // IPv4, 4 octets, 192.0.2.2; no nonce
            ]
        );
        let back = parse_chain(first, &bytes).unwrap();
        let Payload::Notify(n) = &back[0] else {
            panic!("not a notify")
        };
        assert_eq!(n.kind, NotifyType::Redirect);
        assert_eq!(Redirect::parse(&n.data).unwrap(), r);
    }

    #[test]
    fn ipv6_fqdn_and_nonce_round_trip() {
        let v6 = Redirect {
            gateway: GatewayIdentity::parse("2001:db8::2").unwrap(),
            nonce: vec![0xab; 32],
        };
        let data = v6.emit().unwrap();
        assert_eq!(&data[..2], [2, 16]);
        assert_eq!(
            data[2..18],
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&data[18..], [0xab; 32]);
        assert_eq!(Redirect::parse(&data).unwrap(), v6);
        let name = Redirect {
            gateway: GatewayIdentity::parse("hub2.example").unwrap(),
            nonce: Vec::new(),
        };
        let data = name.emit().unwrap();
        assert_eq!(&data[..2], [3, 12]);
        assert_eq!(&data[2..], b"hub2.example");
        assert_eq!(Redirect::parse(&data).unwrap(), name);
        assert_eq!(name.gateway.to_string(), "hub2.example");
    }

    #[test]
    fn malformed_data_is_refused() {
        for bad in [
            &[][..],                       // nothing
            &[1][..],                      // no length
            &[1, 4, 192, 0, 2][..],        // shorter than its length
            &[1, 3, 192, 0, 2][..],        // IPv4 of 3 octets
            &[1, 5, 192, 0, 2, 2, 0][..],  // IPv4 of 5 octets
            &[2, 4, 192, 0, 2, 2][..],     // IPv6 of 4 octets
            &[3, 0][..],                   // empty name
            &[3, 3, b'a', 0, b'b'][..],    // NUL in a name
            &[3, 3, b'a', b'.', b'.'][..], // empty label
            &[0, 4, 192, 0, 2, 2][..],     // reserved type 0
            &[241, 4, 192, 0, 2, 2][..],   // private-use type
        ] {
            assert!(Redirect::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(GatewayIdentity::parse("not a name").is_err());
        assert!(GatewayIdentity::parse("").is_err());
        assert!(GatewayIdentity::parse(&"a".repeat(64)).is_err());
        // 255 octets is the most a name may have.
        assert!(GatewayIdentity::parse(&["a"; 128].join(".")).is_ok());
        assert!(GatewayIdentity::parse(&["a"; 129].join(".")).is_err());
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking_and_round_trip() {
        // Every two-byte header over short bodies, and every byte flipped
        // in a valid encoding: what parses emits the same bytes again.
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for t in [0u8, 1, 2, 3, 4, 255] {
            for len in [0u8, 1, 3, 4, 5, 16, 17, 255] {
                for body in [0usize, 3, 4, 16, 20] {
                    let mut v = vec![t, len];
                    v.extend(std::iter::repeat_n(b'a', body));
                    inputs.push(v);
                }
            }
        }
        let good = Redirect {
            gateway: GatewayIdentity::Fqdn("hub2.example".into()),
            nonce: vec![1; 16],
        }
        .emit()
        .unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            inputs.push(b);
        }
        for input in inputs {
            if let Ok(r) = Redirect::parse(&input) {
                assert_eq!(r.emit().unwrap(), input, "{input:?}");
            }
        }
    }
}
