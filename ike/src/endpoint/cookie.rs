//! Defence of the responder before IKE_AUTH: stateless cookies (RFC 7296
//! §2.6), limits on half-open IKE SAs (in all and per source address) and a
//! rate limit on the unprotected error notifies answering IKE_SA_INIT.

use super::nat::frame;
use super::sa::IkeSa;
use super::{refusal, Endpoint, Incoming, Transmit};
use crate::crypto::constant_time_eq;
use crate::error::Error;
use crate::wire::{ExchangeType, Flags, HeaderRepr, Notify, NotifyType, Payload};
use rand_chacha::rand_core::RngCore;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tracing::debug;

/// Secrets of stateless cookies (RFC 7296 §2.6), rotated so that a cookie
/// is valid for at most two rotation periods.
#[derive(Default)]
pub(super) struct CookieSecrets {
    pub(super) version: u8,
    pub(super) current: [u8; 32],
    pub(super) previous: [u8; 32],
    pub(super) rotate_at: Option<Instant>,
}

pub(super) const COOKIE_ROTATION: Duration = Duration::from_secs(300);

impl Endpoint {
    /// `Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)`
    /// (RFC 7296 §2.6).
    pub(super) fn cookie(
        version: u8,
        secret: &[u8; 32],
        nonce: &[u8],
        ip: IpAddr,
        spi_i: u64,
    ) -> Vec<u8> {
        use aws_lc_rs::digest;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(nonce);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.update(secret);
        let mut out = vec![version];
        out.extend_from_slice(ctx.finish().as_ref());
        out
    }

    pub(super) fn rotate_cookie_secret(&mut self, now: Instant) {
        if self.cookies.rotate_at.is_some_and(|t| t > now) {
            return;
        }
        self.cookies.previous = self.cookies.current;
        self.rng.fill_bytes(&mut self.cookies.current);
        self.cookies.version = self.cookies.version.wrapping_add(1);
        self.cookies.rotate_at = Some(now + COOKIE_ROTATION);
    }

    /// Whether a request carries a cookie we issued (current or previous
    /// secret), as its first payload.
    pub(super) fn cookie_valid(
        &self,
        payloads: &[Payload],
        nonce: &[u8],
        remote: SocketAddr,
        spi_i: u64,
    ) -> bool {
        let Some(Payload::Notify(n)) = payloads.first() else {
            return false;
        };
        if n.kind != NotifyType::Cookie || n.data.is_empty() {
            return false;
        }
        let c = &self.cookies;
        let (version, secret) = if n.data[0] == c.version {
            (c.version, &c.current)
        } else if n.data[0] == c.version.wrapping_sub(1) {
            (n.data[0], &c.previous)
        } else {
            return false;
        };
        constant_time_eq(
            &n.data,
            &Self::cookie(version, secret, nonce, remote.ip(), spi_i),
        )
    }

    /// Releases a responder's half-open table entry.
    pub(super) fn forget_half_open(&mut self, sa: &mut IkeSa) {
        if let Some(key) = sa.half_open_key.take() {
            self.half_open.remove(&key);
            if let Some(n) = self.half_open_per_ip.get_mut(&key.0.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.half_open_per_ip.remove(&key.0.ip());
                }
            }
        }
    }

    /// Answers an IKE_SA_INIT request the hub refused with the unprotected
    /// Notify its error maps to ([`refusal`]), within the rate limit.
    pub(super) fn reply_init_error(&mut self, now: Instant, msg: Incoming<'_>, e: &Error) {
        let Some(Notify { kind, data, .. }) = refusal(ExchangeType::IkeSaInit, e) else {
            return;
        };
        if !self.take_reply_token(now) {
            debug!(remote = %msg.remote, notify = %kind, "error reply suppressed (rate limit)");
            return;
        }
        self.send_init_notify(msg.remote, msg.local, msg.hdr, kind, data);
    }

    /// A token of the unprotected-reply budget, refilled at
    /// `error_replies_per_sec` up to one second's worth.
    pub(super) fn take_reply_token(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.config.error_replies_per_sec);
        let (tokens, last) = self.reply_tokens;
        let refill = last.map_or(rate, |l| {
            now.saturating_duration_since(l).as_secs_f64() * rate
        });
        let tokens = (tokens + refill).min(rate);
        if tokens >= 1.0 {
            self.reply_tokens = (tokens - 1.0, Some(now));
            true
        } else {
            self.reply_tokens = (tokens, Some(now));
            false
        }
    }

    pub(super) fn send_init_notify(
        &mut self,
        remote: SocketAddr,
        local: SocketAddr,
        hdr: &HeaderRepr,
        kind: NotifyType,
        data: Vec<u8>,
    ) {
        let payloads = [Payload::Notify(Notify::new(kind, data))];
        let Ok(message) = Self::plain_message(
            hdr.spi_i,
            0,
            ExchangeType::IkeSaInit,
            Flags::new(false, true),
            0,
            &payloads,
        ) else {
            return;
        };
        let contents = frame(local.port() == self.config.natt_port, message);
        self.transmits.push_back(Transmit {
            local,
            remote,
            contents,
        });
    }
}
