//! IKEv2 (RFC 7296) for the renkei hub, as a sans-IO state machine.
//!
//! ```text
//!   UDP 500/4500 datagrams ──handle_datagram──▶ ┌──────────┐ ──poll_transmit──▶ datagrams to send
//!   timer deadline         ──handle_timeout───▶ │ Endpoint │ ──poll_event─────▶ SA up/down, refusals
//!   operator               ──initiate/close───▶ └──────────┘ ──poll_timeout───▶ next deadline
//! ```
//!
//! No sockets, no clock and no OS randomness live here: the driver (the
//! `renkei` daemon, or a test with a virtual clock) passes `now` in, and the
//! CSPRNG is seeded from the configuration. Only CRYPTREC-listed algorithms
//! are negotiated ([`proposal`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod crypto;
mod endpoint;
mod error;
mod keys;
pub mod proposal;
pub mod ts;
pub mod wire;

pub use config::{CaCredentials, Config, Credentials, Lifetimes, PeerAuth, PeerConfig};
pub use endpoint::{
    ChildSaInfo, Endpoint, Event, IkeSaId, IkeSaStatus, NewIkeSas, Transmit, NO_NAT_TRAVERSAL,
    REDIRECTED_BUT_KEPT,
};
pub use error::Error;
pub use keys::ChildKeys;
pub use proposal::{EspSuite, IkeSuite, ProposalSet, Protocol};
