//! One error type for the IKE layer, mapped to the Notify sent back.

use crate::crypto::CryptoError;
use crate::wire::{KeId, NotifyType, WireError};
use std::fmt;

/// What went wrong with a peer's message or an operator's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The message does not parse (INVALID_SYNTAX).
    Syntax(WireError),
    /// An unknown critical payload (UNSUPPORTED_CRITICAL_PAYLOAD).
    UnsupportedCritical(u8),
    /// A required payload is missing or one is out of place (INVALID_SYNTAX).
    Missing(&'static str),
    /// Nothing offered is acceptable (NO_PROPOSAL_CHOSEN); carries what was
    /// offered, for the log.
    NoProposalChosen(String),
    /// The KE payload's group is not the one chosen (INVALID_KE_PAYLOAD).
    InvalidKe(KeId),
    /// The peer failed to authenticate, or is not allowed
    /// (AUTHENTICATION_FAILED). The reason is for the log only.
    AuthenticationFailed(String),
    /// The traffic selectors cannot be narrowed to the configuration
    /// (TS_UNACCEPTABLE).
    TsUnacceptable(String),
    /// A cryptographic check failed: the message is dropped without answer.
    Crypto(CryptoError),
    /// The peer's response broke the protocol (no answer is sent).
    Misbehaved(String),
    /// An operator request named something that does not exist.
    NotFound(String),
    /// The SA is busy with a conflicting exchange; the peer should retry
    /// (TEMPORARY_FAILURE, RFC 7296 §2.25).
    TemporaryFailure(&'static str),
    /// A Child SA the peer named does not exist (CHILD_SA_NOT_FOUND).
    ChildSaNotFound(u32),
    /// The peer refused our request with this error Notify (a normal
    /// refusal, not misbehaviour; nothing is sent back).
    RefusedByPeer(NotifyType),
    /// An operator request this SA cannot carry out (e.g. a REDIRECT to a
    /// facility that did not announce support); the text says why.
    NotPossible(String),
}

impl Error {
    /// The Notify type this error sends back, if any.
    pub fn notify(&self) -> Option<NotifyType> {
        match self {
            Error::Syntax(WireError::UnsupportedCritical(_)) | Error::UnsupportedCritical(_) => {
                Some(NotifyType::UnsupportedCriticalPayload)
            }
            Error::Syntax(WireError::InvalidMajorVersion(_)) => {
                Some(NotifyType::InvalidMajorVersion)
            }
            Error::Syntax(_) | Error::Missing(_) => Some(NotifyType::InvalidSyntax),
            Error::NoProposalChosen(_) => Some(NotifyType::NoProposalChosen),
            Error::InvalidKe(_) => Some(NotifyType::InvalidKePayload),
            Error::AuthenticationFailed(_) => Some(NotifyType::AuthenticationFailed),
            Error::TsUnacceptable(_) => Some(NotifyType::TsUnacceptable),
            Error::TemporaryFailure(_) => Some(NotifyType::TemporaryFailure),
            Error::ChildSaNotFound(_) => Some(NotifyType::ChildSaNotFound),
            Error::Crypto(_)
            | Error::Misbehaved(_)
            | Error::NotFound(_)
            | Error::RefusedByPeer(_)
            | Error::NotPossible(_) => None,
        }
    }
}

impl Error {
    /// The Notify this refusal is about: the one the peer sent, or the one
    /// we send back (for status and logs; NO_PROPOSAL_CHOSEN when neither).
    pub fn reported_notify(&self) -> NotifyType {
        match self {
            Error::RefusedByPeer(n) => *n,
            e => e.notify().unwrap_or(NotifyType::NoProposalChosen),
        }
    }

    /// The Notify payload answering this error, with its data.
    pub fn notify_payload(&self) -> Option<crate::wire::Payload> {
        let kind = self.notify()?;
        let data = match self {
            Error::InvalidKe(g) => u16::from(*g).to_be_bytes().to_vec(),
            _ => Vec::new(),
        };
        Some(crate::wire::Payload::Notify(crate::wire::Notify::new(
            kind, data,
        )))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax(e) => write!(f, "invalid syntax: {e}"),
            Error::UnsupportedCritical(t) => write!(f, "unsupported critical payload {t}"),
            Error::Missing(what) => write!(f, "invalid syntax: {what}"),
            Error::NoProposalChosen(offered) => {
                write!(f, "no acceptable proposal; peer offered {offered}")
            }
            Error::InvalidKe(k) => write!(f, "key exchange method must be {k}"),
            Error::AuthenticationFailed(why) => write!(f, "authentication failed: {why}"),
            Error::TsUnacceptable(why) => write!(f, "traffic selectors unacceptable: {why}"),
            Error::Crypto(e) => write!(f, "{e}"),
            Error::Misbehaved(why) => write!(f, "peer misbehaved: {why}"),
            Error::NotFound(what) => write!(f, "{what} not found"),
            Error::TemporaryFailure(why) => write!(f, "temporary failure: {why}"),
            Error::ChildSaNotFound(spi) => write!(f, "no Child SA with SPI {spi:08x}"),
            Error::RefusedByPeer(n) => write!(f, "the facility refused it with {n}"),
            Error::NotPossible(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::UnsupportedCritical(t) => Error::UnsupportedCritical(t),
            other => Error::Syntax(other),
        }
    }
}

impl From<CryptoError> for Error {
    fn from(e: CryptoError) -> Self {
        Error::Crypto(e)
    }
}
