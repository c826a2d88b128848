//! Authentication in IKE_AUTH: pre-shared keys (RFC 7296 §2.15) and
//! certificate signatures (RFC 7427 "Digital Signature", and the fixed
//! ECDSA methods 9–11 of RFC 4754 when a facility uses them).
//!
//! Both sides of one facility authenticate the same way: a facility
//! configured for certificates must present one from the hub's CA, and the
//! hub answers with its own certificate; a PSK facility proves the PSK.

use pki::sig::{Curve, Hash, Scheme};
use pki::verify::{TrustStore, ValidCert};
use pki::Identity;

use crate::config::{Credentials, PeerAuth};
use crate::crypto::{constant_time_eq, Prf};
use crate::error::Error;
use crate::keys::psk_auth;
use crate::wire::{AuthMethod, Notify, NotifyType, Payload, PayloadsExt};

/// Certificate encoding "X.509 Certificate - Signature" (RFC 7296 §3.6).
pub(super) const CERT_X509_SIGNATURE: u8 = 4;

/// Hash algorithm numbers of SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4,
/// RFC 8420 for "Identity", used by Ed25519).
const HASH_SHA2_256: u16 = 2;
const HASH_SHA2_384: u16 = 3;
const HASH_SHA2_512: u16 = 4;
const HASH_IDENTITY: u16 = 5;

/// The signature hashes a peer announced in IKE_SA_INIT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SigHashes {
    sha256: bool,
    sha384: bool,
    sha512: bool,
    identity: bool,
}

impl SigHashes {
    /// Reads the peer's SIGNATURE_HASH_ALGORITHMS notify, if any.
    pub(super) fn from_payloads(payloads: &[Payload]) -> SigHashes {
        let mut h = SigHashes::default();
        for n in payloads
            .notifies()
            .filter(|n| n.kind == NotifyType::SignatureHashAlgorithms)
        {
            for pair in n.data.chunks_exact(2) {
                match u16::from_be_bytes([pair[0], pair[1]]) {
                    HASH_SHA2_256 => h.sha256 = true,
                    HASH_SHA2_384 => h.sha384 = true,
                    HASH_SHA2_512 => h.sha512 = true,
                    HASH_IDENTITY => h.identity = true,
                    _ => {}
                }
            }
        }
        h
    }

    /// The notify the hub sends: every hash it verifies with.
    pub(super) fn announcement() -> Payload {
        let data = [HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512, HASH_IDENTITY]
            .iter()
            .flat_map(|h| h.to_be_bytes())
            .collect();
        Payload::Notify(Notify::new(NotifyType::SignatureHashAlgorithms, data))
    }

    fn hashes(self) -> Vec<Hash> {
        [
            (self.sha256, Hash::Sha256),
            (self.sha384, Hash::Sha384),
            (self.sha512, Hash::Sha512),
        ]
        .into_iter()
        .filter_map(|(on, h)| on.then_some(h))
        .collect()
    }
}

/// What an AUTH payload covers (RFC 7296 §2.15): the sender's first
/// message, the other side's nonce and the MAC of the sender's ID payload.
pub(super) struct AuthInput<'a> {
    pub(super) prf: Prf,
    pub(super) message: &'a [u8],
    pub(super) nonce: &'a [u8],
    pub(super) sk_p: &'a [u8],
    pub(super) id_type: u8,
    /// The ID payload's RESERVED octets: as received for the peer's AUTH
    /// (RFC 7296 §2.15 covers the payload as sent), zero for our own.
    pub(super) id_reserved: [u8; 3],
    pub(super) id_data: &'a [u8],
}

impl AuthInput<'_> {
    /// `RealMessage | NonceOfOtherSide | prf(SK_p, RestOfIDPayload)`, where
    /// `RestOfIDPayload` is ID type, RESERVED and identification data.
    fn octets(&self) -> Vec<u8> {
        let maced_id = self.prf.prf(
            self.sk_p,
            &[&[self.id_type], &self.id_reserved, self.id_data],
        );
        [self.message, self.nonce, &maced_id].concat()
    }

    fn psk(&self, psk: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
        psk_auth(
            self.prf,
            psk,
            self.message,
            self.nonce,
            self.sk_p,
            self.id_type,
            self.id_reserved,
            self.id_data,
        )
    }
}

/// The hub's credentials to answer a facility with: during a CA rollover
/// ([`crate::Config::credentials_by_ca`]) those from the first CA the
/// facility names in a CERTREQ among `payloads` (RFC 7296 §3.7: the CAs it
/// trusts), else from the CA that issued the certificate it sent, else the
/// current ones.
pub(super) fn pick_credentials<'a>(
    config: &'a crate::Config,
    payloads: &[Payload],
) -> Option<&'a Credentials> {
    let by_ca = &config.credentials_by_ca;
    if by_ca.is_empty() {
        return config.credentials.as_deref();
    }
    let requested: Vec<&[u8]> = payloads
        .iter()
        .filter_map(|p| match p {
            Payload::CertReq { encoding, data } if *encoding == CERT_X509_SIGNATURE => Some(data),
            _ => None,
        })
        .flat_map(|d| d.chunks_exact(20))
        .collect();
    if let Some(c) = by_ca.iter().find(|c| {
        c.ca_hashes
            .iter()
            .any(|h| requested.contains(&h.as_slice()))
    }) {
        return Some(&c.credentials);
    }
    let issuer = payloads
        .iter()
        .find_map(|p| match p {
            Payload::Cert { encoding, data } if *encoding == CERT_X509_SIGNATURE => Some(data),
            _ => None,
        })
        .and_then(|der| config.trust.as_ref()?.issuer_hash(der));
    if let Some(c) = issuer.and_then(|h| by_ca.iter().find(|c| c.ca_hashes[0] == h)) {
        return Some(&c.credentials);
    }
    config.credentials.as_deref()
}

/// The payloads that authenticate the hub to a facility: AUTH, preceded by
/// the hub's CERT for certificate facilities.
pub(super) fn make(
    auth: &PeerAuth,
    credentials: Option<&Credentials>,
    peer_hashes: SigHashes,
    input: &AuthInput<'_>,
) -> Result<Vec<Payload>, Error> {
    let creds = match auth {
        PeerAuth::Psk(psk) => {
            return Ok(vec![Payload::Auth {
                method: AuthMethod::SharedKeyMic,
                data: input.psk(psk).to_vec(),
            }])
        }
        PeerAuth::Cert => credentials.ok_or_else(|| {
            Error::AuthenticationFailed(
                "the hub has no certificate of its own (make one with `renkei hub renew-cert`, or restore hub.key/hub.pem)".into(),
            )
        })?,
    };
    let key_type = creds.key.key_type();
    let scheme = key_type
        .preferred_scheme(&peer_hashes.hashes(), true)
        .filter(|s| *s != Scheme::Ed25519 || peer_hashes.identity)
        .ok_or_else(|| {
            Error::AuthenticationFailed(format!(
                "the facility announced no signature hash the hub's {key_type} key can sign with (RFC 7427 SIGNATURE_HASH_ALGORITHMS)"
            ))
        })?;
    tracing::debug!(
        serial = %pki::verify::describe(&creds.cert_der).map(|c| c.serial).unwrap_or_default(),
        "authenticating with the hub's certificate"
    );
    let signature = creds
        .key
        .sign(scheme, &input.octets())
        .map_err(|e| Error::AuthenticationFailed(format!("signing AUTH: {e}")))?;
    let ai = scheme.algorithm_identifier();
    let mut data = Vec::with_capacity(1 + ai.len() + signature.len());
    data.push(ai.len() as u8);
    data.extend_from_slice(&ai);
    data.extend_from_slice(&signature);
    Ok(vec![
        Payload::Cert {
            encoding: CERT_X509_SIGNATURE,
            data: creds.cert_der.clone(),
        },
        Payload::Auth {
            method: AuthMethod::DigitalSignature,
            data,
        },
    ])
}

/// Checks that a facility claiming `identity` proved it as configured.
/// Returns the validated certificate for certificate facilities.
pub(super) fn verify(
    auth: &PeerAuth,
    trust: Option<&TrustStore>,
    unix_now: Option<i64>,
    identity: &Identity,
    payloads: &[Payload],
    input: &AuthInput<'_>,
) -> Result<Option<ValidCert>, Error> {
    let fail = |why: String| Error::AuthenticationFailed(why);
    let (method, value) = payloads
        .auth()
        .ok_or(Error::Missing("no AUTH payload (EAP is not supported)"))?;
    match auth {
        PeerAuth::Psk(psk) => {
            if method != AuthMethod::SharedKeyMic {
                return Err(fail(format!(
                    "{identity} used {method} authentication; it is configured for a pre-shared key"
                )));
            }
            if !constant_time_eq(&input.psk(psk), value) {
                return Err(fail(format!("pre-shared key of {identity} does not match")));
            }
            Ok(None)
        }
        PeerAuth::Cert => {
            let curve = match method {
                AuthMethod::DigitalSignature => None,
                AuthMethod::EcdsaSha256P256 => Some(Curve::P256),
                AuthMethod::EcdsaSha384P384 => Some(Curve::P384),
                AuthMethod::EcdsaSha512P521 => Some(Curve::P521),
                AuthMethod::RsaSig => {
                    return Err(fail(format!(
                        "{identity} signed with RSA authentication method 1, which implies SHA-1; refused (RFC 7427 signatures are required)"
                    )))
                }
                other => {
                    return Err(fail(format!(
                        "{identity} used {other} authentication; it is configured for a certificate"
                    )))
                }
            };
            let trust = trust.ok_or_else(|| {
                fail("the hub has no CA to check certificates with (its state directory has no ca/ca.pem; restore it from a backup)".into())
            })?;
            let now = unix_now.ok_or_else(|| fail("the hub's wall clock is not set".into()))?;
            let cert = payloads
                .iter()
                .find_map(|p| match p {
                    Payload::Cert { encoding, data } if *encoding == CERT_X509_SIGNATURE => {
                        Some(data)
                    }
                    _ => None,
                })
                .ok_or_else(|| fail(format!("{identity} sent no X.509 certificate")))?;
            let valid = trust
                .validate(cert, identity, now)
                .map_err(|e| fail(format!("certificate of {identity} refused: {e}")))?;
            let octets = input.octets();
            let mut scheme_name = String::new();
            let checked = match curve {
                Some(c) => {
                    scheme_name = format!("{method} (RFC 4754)");
                    valid.key.verify_ecdsa_fixed(c, &octets, value)
                }
                None => {
                    let len = *value.first().ok_or(Error::Missing("empty AUTH"))? as usize;
                    let ai = value
                        .get(1..1 + len)
                        .ok_or(Error::Missing("AUTH shorter than its algorithm identifier"))?;
                    match Scheme::from_algorithm_identifier(ai) {
                        Ok((scheme, used)) if used == len => {
                            scheme_name = scheme.to_string();
                            valid.key.verify(scheme, &octets, &value[1 + len..])
                        }
                        Ok(_) => Err(pki::sig::SigError::Malformed(
                            "AUTH algorithm identifier length",
                        )),
                        Err(e) => Err(e),
                    }
                }
            };
            checked.map_err(|e| fail(format!("AUTH signature of {identity} refused: {e}")))?;
            tracing::info!(
                %identity,
                serial = %valid.serial,
                not_after = %pki::verify::iso(valid.not_after),
                "certificate accepted: {} key, AUTH signed with {scheme_name}",
                valid.key.key_type()
            );
            Ok(Some(valid))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pki::ca::{Ca, KeyKind};
    use pki::sig::SigningKey;

    const NOW: i64 = 1_790_000_000;

    struct Fixture {
        trust: TrustStore,
        creds: Credentials,
        key_der: Vec<u8>,
        id: Identity,
    }

    fn fixture(kind: KeyKind) -> Fixture {
        let ca = Ca::create(KeyKind::EcdsaP384, "Test Network", NOW, 3650).unwrap();
        let id = Identity::parse("kyoto.example").unwrap();
        let issued = ca.issue(&id, kind, NOW, 30).unwrap();
        Fixture {
            trust: TrustStore::new(ca.cert_der(), []).unwrap(),
            creds: Credentials {
                key: SigningKey::from_pkcs8(&issued.key_der).unwrap(),
                cert_der: issued.cert_der.clone(),
            },
            key_der: issued.key_der.to_vec(),
            id,
        }
    }

    fn auth_input(id: &Identity) -> (Vec<u8>, AuthInput<'static>) {
        let data = id.data();
        let leaked: &'static [u8] = Box::leak(data.clone().into_boxed_slice());
        (
            data,
            AuthInput {
                prf: Prf::HmacSha256,
                message: b"the first message",
                nonce: b"the other side's nonce",
                sk_p: b"SK_p of this side of the SA.....",
                id_type: id.id_type(),
                id_reserved: [0; 3],
                id_data: leaked,
            },
        )
    }

    fn all_hashes() -> SigHashes {
        let n = SigHashes::announcement();
        SigHashes::from_payloads(&[n])
    }

    fn check(f: &Fixture, payloads: &[Payload]) -> Result<Option<ValidCert>, Error> {
        let (_, input) = auth_input(&f.id);
        verify(
            &PeerAuth::Cert,
            Some(&f.trust),
            Some(NOW + 60),
            &f.id,
            payloads,
            &input,
        )
    }

    fn cert_payload(f: &Fixture) -> Payload {
        Payload::Cert {
            encoding: CERT_X509_SIGNATURE,
            data: f.creds.cert_der.clone(),
        }
    }

    fn refusal(r: Result<Option<ValidCert>, Error>) -> String {
        match r {
            Err(Error::AuthenticationFailed(why)) => why,
            other => panic!("not refused: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn what_make_produces_verify_accepts() {
        for kind in KeyKind::ALL {
            let f = fixture(kind);
            let (_, input) = auth_input(&f.id);
            let proof = make(&PeerAuth::Cert, Some(&f.creds), all_hashes(), &input).unwrap();
            assert!(check(&f, &proof).unwrap().is_some(), "{kind}");
            // The same proof does not cover other octets.
            let other = AuthInput {
                message: b"another first message",
                ..input
            };
            let r = verify(
                &PeerAuth::Cert,
                Some(&f.trust),
                Some(NOW),
                &f.id,
                &proof,
                &other,
            );
            assert!(refusal(r).contains("signature does not verify"), "{kind}");
        }
    }

    #[test]
    fn rfc4754_fixed_ecdsa_is_accepted() {
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let f = fixture(KeyKind::EcdsaP256);
        let (_, input) = auth_input(&f.id);
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &f.key_der).unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let sig = key.sign(&rng, &input.octets()).unwrap().as_ref().to_vec();
        assert_eq!(sig.len(), 64);
        let auth = |method, data: Vec<u8>| Payload::Auth { method, data };
        let ok = [
            cert_payload(&f),
            auth(AuthMethod::EcdsaSha256P256, sig.clone()),
        ];
        assert!(check(&f, &ok).unwrap().is_some());
        // The wrong curve's method, or a flipped bit, is refused.
        let wrong = [
            cert_payload(&f),
            auth(AuthMethod::EcdsaSha384P384, sig.clone()),
        ];
        assert!(refusal(check(&f, &wrong)).contains("cannot come from"));
        let mut bad = sig;
        bad[10] ^= 1;
        let flipped = [cert_payload(&f), auth(AuthMethod::EcdsaSha256P256, bad)];
        assert!(refusal(check(&f, &flipped)).contains("does not verify"));
    }

    #[test]
    fn sha1_and_wrong_methods_are_refused_with_the_reason() {
        let f = fixture(KeyKind::Rsa3072);
        let auth = |method, data: Vec<u8>| Payload::Auth { method, data };
        // Method 1 (RSA, SHA-1 implied).
        let m1 = [cert_payload(&f), auth(AuthMethod::RsaSig, vec![0; 384])];
        assert!(refusal(check(&f, &m1)).contains("SHA-1"));
        // Method 14 naming sha1WithRSAEncryption.
        let ai = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05,
            0x00,
        ];
        let mut data = vec![ai.len() as u8];
        data.extend_from_slice(&ai);
        data.extend_from_slice(&[0; 384]);
        let m14 = [cert_payload(&f), auth(AuthMethod::DigitalSignature, data)];
        assert!(refusal(check(&f, &m14)).contains("SHA-1"));
        // A PSK where a certificate is configured, and no certificate.
        let psk = [auth(AuthMethod::SharedKeyMic, vec![0; 32])];
        assert!(refusal(check(&f, &psk)).contains("configured for a certificate"));
        let (_, input) = auth_input(&f.id);
        let mut proof = make(&PeerAuth::Cert, Some(&f.creds), all_hashes(), &input).unwrap();
        proof.remove(0);
        assert!(refusal(check(&f, &proof)).contains("sent no X.509 certificate"));
        // An AUTH whose identifier length runs past its end.
        let short = [
            cert_payload(&f),
            auth(AuthMethod::DigitalSignature, vec![200, 0x30]),
        ];
        assert!(check(&f, &short).is_err());
        // A signature where a PSK is configured.
        let (_, input) = auth_input(&f.id);
        let proof = make(&PeerAuth::Cert, Some(&f.creds), all_hashes(), &input).unwrap();
        let r = verify(
            &PeerAuth::Psk(zeroize::Zeroizing::new(b"a pre-shared key".to_vec())),
            Some(&f.trust),
            Some(NOW),
            &f.id,
            &proof,
            &input,
        );
        assert!(refusal(r).contains("configured for a pre-shared key"));
    }

    #[test]
    fn the_hub_signs_only_with_hashes_the_facility_announced() {
        let f = fixture(KeyKind::EcdsaP384);
        let (_, input) = auth_input(&f.id);
        let none = SigHashes::default();
        assert!(make(&PeerAuth::Cert, Some(&f.creds), none, &input).is_err());
        let only256 = SigHashes::from_payloads(&[Payload::Notify(Notify::new(
            NotifyType::SignatureHashAlgorithms,
            vec![0, 2],
        ))]);
        // P-384 signs with SHA-384 only; a facility offering SHA-256 alone
        // gets a clear refusal rather than a signature it cannot check.
        assert!(make(&PeerAuth::Cert, Some(&f.creds), only256, &input).is_err());
        let ed = fixture(KeyKind::Ed25519);
        assert!(make(&PeerAuth::Cert, Some(&ed.creds), only256, &input).is_err());
        assert!(make(&PeerAuth::Cert, None, all_hashes(), &input).is_err());
    }

    /// During a CA rollover the hub answers each facility with its
    /// certificate from a CA the facility trusts: the one its CERTREQ
    /// names, else the one that issued the facility's certificate, else
    /// the current one.
    #[test]
    fn rollover_answers_with_the_certificate_of_a_ca_the_facility_trusts() {
        let old = Ca::create(KeyKind::EcdsaP256, "Test Network", NOW, 3650).unwrap();
        let new = Ca::create(KeyKind::EcdsaP256, "Test Network 2", NOW, 3650).unwrap();
        let hub = Identity::parse("hub.example").unwrap();
        let creds = |ca: &Ca| {
            let i = ca.issue(&hub, KeyKind::EcdsaP256, NOW, 30).unwrap();
            std::sync::Arc::new(Credentials {
                key: SigningKey::from_pkcs8(&i.key_der).unwrap(),
                cert_der: i.cert_der.clone(),
            })
        };
        let (c_new, c_old) = (creds(&new), creds(&old));
        let hash = |ca: &Ca| pki::verify::certreq_hash(ca.cert_der()).unwrap();
        // strongSwan names a CA by the SHA-1 of its SubjectPublicKeyInfo.
        let spki_hash = |ca: &Ca| pki::verify::certreq_hashes(ca.cert_der()).unwrap()[1];
        let mut config = crate::Config::new(hub.clone(), [0; 32]);
        config.credentials = Some(c_new.clone());
        config.trust = Some(std::sync::Arc::new(
            TrustStore::with_cas(&[new.cert_der(), old.cert_der()], []).unwrap(),
        ));
        let certreq = |h: &[[u8; 20]]| Payload::CertReq {
            encoding: CERT_X509_SIGNATURE,
            data: h.concat(),
        };
        let kyoto = Identity::parse("kyoto.example").unwrap();
        let old_facility = Payload::Cert {
            encoding: CERT_X509_SIGNATURE,
            data: old
                .issue(&kyoto, KeyKind::EcdsaP256, NOW, 30)
                .unwrap()
                .cert_der,
        };
        // Outside a rollover: always the current certificate.
        let picked = pick_credentials(&config, &[certreq(&[hash(&old)])]).unwrap();
        assert_eq!(picked.cert_der, c_new.cert_der);
        config.credentials_by_ca = vec![
            crate::CaCredentials {
                ca_hashes: pki::verify::certreq_hashes(new.cert_der()).unwrap(),
                credentials: c_new.clone(),
            },
            crate::CaCredentials {
                ca_hashes: pki::verify::certreq_hashes(old.cert_der()).unwrap(),
                credentials: c_old.clone(),
            },
        ];
        for (payloads, want, why) in [
            (
                vec![certreq(&[hash(&old)])],
                &c_old,
                "CERTREQ names the old CA",
            ),
            (
                vec![certreq(&[spki_hash(&old)])],
                &c_old,
                "CERTREQ names the old CA as strongSwan does",
            ),
            (
                vec![certreq(&[[7; 20], hash(&new)])],
                &c_new,
                "CERTREQ names the new CA",
            ),
            (
                vec![certreq(&[hash(&old), hash(&new)])],
                &c_new,
                "both: the current one first",
            ),
            (
                vec![old_facility.clone()],
                &c_old,
                "no CERTREQ; an old-CA facility",
            ),
            (
                vec![certreq(&[[7; 20]]), old_facility],
                &c_old,
                "unknown CERTREQ; old-CA certificate",
            ),
            (vec![], &c_new, "nothing to go by"),
        ] {
            let picked = pick_credentials(&config, &payloads).unwrap();
            assert_eq!(picked.cert_der, want.cert_der, "{why}");
        }
        // The hub's CERTREQ names both CAs, current first.
        assert_eq!(
            config.trust.as_ref().unwrap().certreq_data(),
            [hash(&new), hash(&old)].concat()
        );
    }
}
