//! What operators type: CIDRs, identities and proposal strings. Nothing may
//! panic, and what parses must print back to something that parses the same.
#![no_main]

use ike::proposal::{ProposalSet, Protocol};
use ike::ts::{parse_subnets, Subnet};
use libfuzzer_sys::fuzz_target;
use pki::Identity;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = parse_subnets(s) {
        for subnet in list {
            assert_eq!(subnet.to_string().parse::<Subnet>().ok(), Some(subnet));
        }
    }
    if let Ok(id) = Identity::parse(s) {
        assert_eq!(Identity::parse(&id.to_string()).ok(), Some(id.clone()));
        assert_eq!(Identity::from_wire(id.id_type(), &id.data()).ok(), Some(id));
    }
    for protocol in [Protocol::Ike, Protocol::Esp] {
        if let Ok(set) = ProposalSet::parse(s, protocol, false) {
            let again = ProposalSet::parse(&set.to_string(), protocol, false)
                .expect("printed proposals parse");
            assert_eq!(again.to_wire(&[], true), set.to_wire(&[], true));
        }
    }
});
