//! Micro-benchmarks of renkei's data and control planes (run with
//! `cargo bench -p renkei-benches`):
//!
//! - `esp_seal_open`: ESP seal and open in place, per suite, at 64, 512 and
//!   1400 bytes;
//! - `ike_handshake`: the CPU cost of one complete IKE_SA_INIT + IKE_AUTH
//!   (PSK) between two in-memory endpoints, per key exchange method.
