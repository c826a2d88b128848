//! Key derivation (RFC 7296 §2.13, §2.14, §2.17) and PSK authentication
//! (§2.15).

use crate::crypto::{Integ, Prf, SkCipher};
use crate::proposal::{EspSuite, IkeSuite};
use zeroize::Zeroizing;

/// The keys of an IKE SA.
pub(crate) struct IkeKeys {
    pub(crate) suite: IkeSuite,
    pub(crate) sk_d: Zeroizing<Vec<u8>>,
    pub(crate) sk_pi: Zeroizing<Vec<u8>>,
    pub(crate) sk_pr: Zeroizing<Vec<u8>>,
    /// Protects what we send.
    pub(crate) outbound: SkCipher,
    /// Protects what we receive.
    pub(crate) inbound: SkCipher,
}

fn split(km: &[u8], at: &mut usize, n: usize) -> Zeroizing<Vec<u8>> {
    let v = Zeroizing::new(km[*at..*at + n].to_vec());
    *at += n;
    v
}

impl IkeKeys {
    /// Keys of a new IKE SA (RFC 7296 §2.14): `SKEYSEED = prf(Ni | Nr, g^ir)`.
    pub(crate) fn derive(
        suite: IkeSuite,
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        we_are_initiator: bool,
    ) -> IkeKeys {
        let skeyseed = suite.prf.prf(&[ni, nr].concat(), &[shared]);
        Self::expand(suite, &skeyseed, ni, nr, spi_i, spi_r, we_are_initiator)
    }

    /// Keys of an IKE SA that replaces one (RFC 7296 §2.18):
    /// `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)` with the old PRF.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn derive_rekey(
        old: &IkeKeys,
        suite: IkeSuite,
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        we_are_initiator: bool,
    ) -> IkeKeys {
        let skeyseed = old.suite.prf.prf(&old.sk_d, &[shared, ni, nr]);
        Self::expand(suite, &skeyseed, ni, nr, spi_i, spi_r, we_are_initiator)
    }

    /// ```text
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    ///     = prf+ (SKEYSEED, Ni | Nr | SPIi | SPIr)
    /// ```
    fn expand(
        suite: IkeSuite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        we_are_initiator: bool,
    ) -> IkeKeys {
        let prf = suite.prf;
        let integ_len = suite.integ.map_or(0, Integ::key_len);
        let encr_len = suite.encr.keymat_len();
        let total = 3 * prf.output_len() + 2 * integ_len + 2 * encr_len;
        let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let km = prf.prf_plus(skeyseed, &seed, total);
        let mut at = 0;
        let sk_d = split(&km, &mut at, prf.output_len());
        let sk_ai = split(&km, &mut at, integ_len);
        let sk_ar = split(&km, &mut at, integ_len);
        let sk_ei = split(&km, &mut at, encr_len);
        let sk_er = split(&km, &mut at, encr_len);
        let sk_pi = split(&km, &mut at, prf.output_len());
        let sk_pr = split(&km, &mut at, prf.output_len());
        let i2r = SkCipher::new(suite.encr, suite.integ, sk_ei, sk_ai);
        let r2i = SkCipher::new(suite.encr, suite.integ, sk_er, sk_ar);
        let (outbound, inbound) = if we_are_initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        IkeKeys {
            suite,
            sk_d,
            sk_pi,
            sk_pr,
            outbound,
            inbound,
        }
    }
}

/// Keys of one Child SA in both directions.
pub struct ChildKeys {
    /// Encryption key (with salt for GCM) of the SA we receive on.
    pub encr_in: Zeroizing<Vec<u8>>,
    /// Integrity key of the SA we receive on (empty for AEAD).
    pub integ_in: Zeroizing<Vec<u8>>,
    /// Encryption key (with salt for GCM) of the SA we send on.
    pub encr_out: Zeroizing<Vec<u8>>,
    /// Integrity key of the SA we send on (empty for AEAD).
    pub integ_out: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys(<redacted>)")
    }
}

/// `KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr)`, taken as the initiator's
/// outbound encryption and integrity keys, then the responder's
/// (RFC 7296 §2.17).
pub(crate) fn derive_child(
    prf: Prf,
    sk_d: &[u8],
    suite: &EspSuite,
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    we_are_initiator: bool,
) -> ChildKeys {
    let encr_len = suite.encr.keymat_len();
    let integ_len = suite.integ.map_or(0, Integ::key_len);
    let seed = [shared.unwrap_or(&[]), ni, nr].concat();
    let km = prf.prf_plus(sk_d, &seed, 2 * (encr_len + integ_len));
    let mut at = 0;
    let ei = split(&km, &mut at, encr_len);
    let ai = split(&km, &mut at, integ_len);
    let er = split(&km, &mut at, encr_len);
    let ar = split(&km, &mut at, integ_len);
    if we_are_initiator {
        ChildKeys {
            encr_out: ei,
            integ_out: ai,
            encr_in: er,
            integ_in: ar,
        }
    } else {
        ChildKeys {
            encr_out: er,
            integ_out: ar,
            encr_in: ei,
            integ_in: ai,
        }
    }
}

/// The PSK AUTH value of RFC 7296 §2.15:
///
/// ```text
/// AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"),
///             <SignedOctets> )
/// SignedOctets = RealMessage | NonceOfOtherSide | prf(SK_p, RestOfIDPayload)
/// ```
///
/// `RestOfIDPayload` is the ID payload after its generic header: ID type,
/// the three RESERVED octets as they were sent, and the identification
/// data.
#[allow(clippy::too_many_arguments)]
pub(crate) fn psk_auth(
    prf: Prf,
    psk: &[u8],
    real_message: &[u8],
    other_nonce: &[u8],
    sk_p: &[u8],
    id_type: u8,
    id_reserved: [u8; 3],
    id_data: &[u8],
) -> Zeroizing<Vec<u8>> {
    let maced_id = prf.prf(sk_p, &[&[id_type], &id_reserved, id_data]);
    let key = prf.prf(psk, &[b"Key Pad for IKEv2"]);
    prf.prf(&key, &[real_message, other_nonce, &maced_id])
}
