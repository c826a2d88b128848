//! A facility's certificate and AUTH signature, as a hostile peer could
//! send them: arbitrary bytes as a certificate for validation against the
//! hub's CA, and as an RFC 7427 AlgorithmIdentifier. Never a panic, and
//! nothing validates that the CA did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::ca::{Ca, KeyKind};
use pki::sig::Scheme;
use pki::verify::TrustStore;
use pki::Identity;
use std::sync::OnceLock;

const NOW: i64 = 1_790_000_000;

fn trust() -> &'static (TrustStore, Identity) {
    static T: OnceLock<(TrustStore, Identity)> = OnceLock::new();
    T.get_or_init(|| {
        let ca = Ca::create(KeyKind::EcdsaP384, "Fuzz Network", NOW, 3650).expect("CA");
        (
            TrustStore::new(ca.cert_der(), ["01".to_string()]).expect("trust"),
            Identity::parse("kyoto.example").expect("id"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (store, id) = trust();
    // Random bytes are never signed by this run's fresh CA key.
    assert!(store.validate(data, id, NOW).is_err());
    if let Ok((_, used)) = Scheme::from_algorithm_identifier(data) {
        assert!(used <= data.len());
    }
});
