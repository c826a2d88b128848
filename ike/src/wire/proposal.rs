//! The substructures of the Security Association payload (RFC 7296
//! §3.3): proposals (§3.3.1), transforms (§3.3.2) and their attributes
//! (§3.3.5).

use super::{
    len16, EncrId, EsnId, IntegId, KeId, PrfId, ProtocolId, Reader, TransformType, WireError,
};

/// Attribute type of the Key Length attribute (RFC 7296 §3.3.5).
const ATTR_KEY_LENGTH: u16 = 14;
const ATTR_TV: u16 = 0x8000;

/// A transform attribute (RFC 7296 §3.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// Type/Value format: a 16-bit value.
    Short {
        /// Attribute type (without the format bit).
        kind: u16,
        /// Value.
        value: u16,
    },
    /// Type/Length/Value format.
    Long {
        /// Attribute type.
        kind: u16,
        /// Value.
        value: Vec<u8>,
    },
}

/// A transform substructure (RFC 7296 §3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform type.
    pub kind: TransformType,
    /// Transform ID within its type.
    pub id: u16,
    /// Attributes; in practice only Key Length.
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: TransformType, id: u16) -> Transform {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute, in bits.
    pub fn with_key_length(kind: TransformType, id: u16, bits: u16) -> Transform {
        Transform {
            kind,
            id,
            attributes: vec![Attribute::Short {
                kind: ATTR_KEY_LENGTH,
                value: bits,
            }],
        }
    }

    /// The Key Length attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Short {
                kind: ATTR_KEY_LENGTH,
                value,
            } => Some(*value),
            _ => None,
        })
    }

    /// Whether it carries an attribute other than Key Length, which makes the
    /// transform unacceptable (RFC 7296 §3.3.6).
    pub fn has_unknown_attributes(&self) -> bool {
        self.attributes.iter().any(|a| {
            !matches!(
                a,
                Attribute::Short {
                    kind: ATTR_KEY_LENGTH,
                    ..
                }
            )
        })
    }

    /// A name for logs, in IANA's words ("AES_GCM_16_256", "MODP_2048").
    pub fn name(&self) -> String {
        let base = match self.kind {
            TransformType::Encr => EncrId::from(self.id).to_string(),
            TransformType::Prf => PrfId::from(self.id).to_string(),
            TransformType::Integ => IntegId::from(self.id).to_string(),
            TransformType::Ke => KeId::from(self.id).to_string(),
            TransformType::Esn => EsnId::from(self.id).to_string(),
            TransformType::Unknown(t) => format!("TRANSFORM{t}({})", self.id),
        };
        match self.key_length() {
            Some(bits) => format!("{base}_{bits}"),
            None => base,
        }
    }

    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Transform, WireError> {
        let kind = TransformType::from(r.u8()?);
        let _reserved = r.u8()?;
        let id = r.u16()?;
        let mut attributes = Vec::new();
        while r.remaining() > 0 {
            let t = r.u16()?;
            if t & ATTR_TV != 0 {
                attributes.push(Attribute::Short {
                    kind: t & !ATTR_TV,
                    value: r.u16()?,
                });
            } else {
                let len = r.u16()? as usize;
                attributes.push(Attribute::Long {
                    kind: t,
                    value: r.take(len)?.to_vec(),
                });
            }
        }
        Ok(Transform {
            kind,
            id,
            attributes,
        })
    }

    pub(super) fn emit(&self, last: bool, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        out.extend_from_slice(&[if last { 0 } else { 3 }, 0, 0, 0]);
        out.push(self.kind.into());
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        for a in &self.attributes {
            match a {
                Attribute::Short { kind, value } => {
                    out.extend_from_slice(&(kind | ATTR_TV).to_be_bytes());
                    out.extend_from_slice(&value.to_be_bytes());
                }
                Attribute::Long { kind, value } => {
                    out.extend_from_slice(&(kind & !ATTR_TV).to_be_bytes());
                    out.extend_from_slice(&len16(value.len())?.to_be_bytes());
                    out.extend_from_slice(value);
                }
            }
        }
        let len = len16(out.len() - start)?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// A proposal substructure (RFC 7296 §3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number (1 for the first, consecutive).
    pub number: u8,
    /// Protocol: IKE or ESP.
    pub protocol: ProtocolId,
    /// The sender's SPI (empty for IKE in IKE_SA_INIT, 4 bytes for ESP).
    pub spi: Vec<u8>,
    /// Transforms, in the sender's order of preference.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Proposal, WireError> {
        let number = r.u8()?;
        let protocol = ProtocolId::from(r.u8()?);
        let spi_size = r.u8()? as usize;
        let count = r.u8()?;
        let spi = r.take(spi_size)?.to_vec();
        let mut transforms = Vec::with_capacity(count as usize);
        for i in 0..count {
            let more = r.u8()?;
            let _reserved = r.u8()?;
            let len = r.u16()? as usize;
            if len < 8 {
                return Err(WireError::Malformed("transform shorter than 8 bytes"));
            }
            let last = i + 1 == count;
            if (last && more != 0) || (!last && more != 3) {
                return Err(WireError::Malformed("transform last/more flag"));
            }
            let mut body = r.sub(len - 4)?;
            transforms.push(Transform::parse(&mut body)?);
            body.finish()?;
        }
        r.finish()?;
        Ok(Proposal {
            number,
            protocol,
            spi,
            transforms,
        })
    }

    pub(super) fn emit(&self, last: bool, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        out.extend_from_slice(&[if last { 0 } else { 2 }, 0, 0, 0]);
        out.push(self.number);
        out.push(self.protocol.into());
        out.push(u8::try_from(self.spi.len()).map_err(|_| WireError::Malformed("SPI too long"))?);
        out.push(
            u8::try_from(self.transforms.len())
                .map_err(|_| WireError::Malformed("too many transforms"))?,
        );
        out.extend_from_slice(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            t.emit(i + 1 == self.transforms.len(), out)?;
        }
        let len = len16(out.len() - start)?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}
