//! The renkei data plane: ESP (RFC 4303, RFC 4106) in UDP (RFC 3948) over
//! a TUN device.
//!
//! ```text
//!   kernel routes ─▶ TUN ─▶ encapsulate (LPM on selectors, seal in place) ─▶ UDP 4500
//!   UDP 4500 ─▶ natt::classify: IKE → control plane │ decapsulate (SPI, replay, open, selectors) ─▶ TUN
//!                         control plane ─▶ SaTable::install / remove, sys::add_route
//! ```
//!
//! [`SaTable`] is the SA database the control plane writes and the workers
//! read; [`packet`] seals and opens in place without allocating;
//! [`replay`] is the anti-replay window; [`selector`] enforces traffic
//! selectors; [`wire`] has the typed views of every header the data plane
//! reads or writes (ESP, IPv4, IPv6, TCP, ICMP); [`sys`] holds every
//! system call (and all `unsafe`).
#![deny(unsafe_code)]

pub mod datapath;
pub mod mtu;
pub mod offload;
pub mod packet;
pub mod replay;
pub mod selector;
mod shard;
pub mod sys;
mod table;
pub mod wire;

pub use datapath::{decapsulate, encapsulate, DataPlane, IkeSink};
pub use packet::{Cipher, Integrity};
pub use selector::Selector;
pub use table::{
    ChildSaSpec, CounterSnapshot, Counters, DropReason, InboundSa, OutboundSa, SaCounters, SaTable,
    Snapshot,
};
