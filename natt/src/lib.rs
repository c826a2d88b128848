//! What a datagram on the NAT-T port is (RFC 3948 §2): the one place
//! where renkei tells a NAT keepalive, an IKE message and an ESP packet
//! apart. Both the data plane (`esp`, which reads UDP 4500) and IKE
//! (`ike`, which is handed what the data plane does not take) use it, so
//! the two can never disagree about a datagram.
//!
//! ```text
//!  UDP 4500 payload ──classify──▶ [0xff]            Keepalive  (ignored)
//!                                 00 00 00 00 | IKE  Ike(IKE)   ─▶ control plane
//!                                 SPI ≠ 0 | ...      Esp(ESP)   ─▶ decapsulate
//!                                 anything shorter   Malformed  (dropped)
//! ```
//!
//! A crate of its own because the crate graph allows no edge between
//! `ike` and `esp`; it depends on nothing and allocates nothing.
#![forbid(unsafe_code)]

/// The non-ESP marker that precedes an IKE message on the NAT-T port
/// (RFC 3948 §2.2): four zero octets where ESP has its SPI.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// The whole payload of a NAT-keepalive packet (RFC 3948 §2.3).
pub const KEEPALIVE: [u8; 1] = [0xff];

/// A UDP datagram received on the NAT-T port, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// A NAT keepalive (RFC 3948 §2.3): "The sender MUST use a one-octet
    /// long payload with the value 0xFF. The receiver SHOULD ignore a
    /// received NAT-keepalive packet."
    Keepalive,
    /// An IKE message (RFC 3948 §2.2), without the non-ESP marker.
    Ike(&'a [u8]),
    /// An ESP packet (RFC 3948 §2.1), from its SPI on.
    Esp(&'a [u8]),
    /// Neither: shorter than an SPI or a marker, and not a keepalive.
    Malformed,
}

/// Classifies the payload of a UDP datagram received on the NAT-T port.
///
/// RFC 3948 §2.1: "The SPI field in the ESP header MUST NOT be a zero
/// value", which is what lets §2.2 put "a 4-octet Non-ESP Marker, set to
/// zero" before an IKE message at the same place. §2.3: a NAT keepalive
/// is the single octet 0xFF. Anything else shorter than four octets can
/// be none of them.
pub fn classify(payload: &[u8]) -> Datagram<'_> {
    if payload == KEEPALIVE {
        return Datagram::Keepalive;
    }
    match payload.split_first_chunk::<4>() {
        Some((marker, ike)) if *marker == NON_ESP_MARKER => Datagram::Ike(ike),
        Some(_) => Datagram::Esp(payload),
        None => Datagram::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_0xff_is_a_keepalive() {
        assert_eq!(classify(&[0xff]), Datagram::Keepalive);
        // Only the one-octet payload: 0xff starting an SPI is ESP.
        let esp = [0xff, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify(&esp), Datagram::Esp(&esp));
        assert_eq!(classify(&[0xff, 0xff]), Datagram::Malformed);
    }

    #[test]
    fn the_non_esp_marker_means_ike_and_is_stripped() {
        let mut d = NON_ESP_MARKER.to_vec();
        d.extend_from_slice(&[0x11; 28]);
        assert_eq!(classify(&d), Datagram::Ike(&[0x11; 28]));
        // The marker alone is an (empty, hence invalid) IKE message: IKE
        // refuses it, the data plane must not try to open it.
        assert_eq!(classify(&[0, 0, 0, 0]), Datagram::Ike(&[]));
    }

    #[test]
    fn a_nonzero_spi_is_esp_whatever_follows() {
        for d in [&[0, 0, 0, 1][..], &[0x80, 0, 0, 0, 1, 2, 3, 4, 5]] {
            assert_eq!(classify(d), Datagram::Esp(d));
        }
    }

    #[test]
    fn anything_shorter_than_a_marker_is_malformed() {
        for d in [&[][..], &[0], &[0, 0, 0], &[1, 2], &[0xfe]] {
            assert_eq!(classify(d), Datagram::Malformed, "{d:?}");
        }
    }
}
