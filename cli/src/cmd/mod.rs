//! What each command does, one module per command group; the arguments
//! are in [`crate::args`].

pub(crate) mod apply;
pub(crate) mod audit;
pub(crate) mod backup;
pub(crate) mod cert;
pub(crate) mod compliance;
pub(crate) mod diagnose;
pub(crate) mod drain;
pub(crate) mod export;
pub(crate) mod ha;
pub(crate) mod hub;
pub(crate) mod init;
pub(crate) mod peer;
pub(crate) mod reload;
pub(crate) mod sa;
pub(crate) mod serve;
pub(crate) mod status;

use crate::control::{self, Request};
use crate::state::StateDir;
use rust_i18n::t;

/// Tells a running daemon that `facility` changed (and with
/// `certificates`, that certificates were revoked).
pub(crate) fn notify_daemon(state: &StateDir, facility: &str, certificates: bool) {
    let reload = Request::Reload {
        facility: Some(facility.to_string()),
        certificates,
    };
    match control::request(state, &reload) {
        Ok(_) => println!("{}", t!("cli.applied")),
        Err(_) => println!("{}", t!("cli.not_running_later")),
    }
}

/// `s` padded with spaces to `width` terminal columns, counting East Asian
/// wide characters (kanji, kana, full-width forms) as two, so that tables
/// with Japanese headers stay aligned.
pub(crate) fn pad(s: &str, width: usize) -> String {
    let cols: usize = s.chars().map(columns).sum();
    format!("{s}{}", " ".repeat(width.saturating_sub(cols)))
}

/// The terminal columns of `c`: two for East Asian wide characters.
fn columns(c: char) -> usize {
    match u32::from(c) {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn padding_counts_wide_characters_twice() {
        assert_eq!(super::pad("NAME", 6), "NAME  ");
        assert_eq!(super::pad("施設", 6), "施設  ");
        assert_eq!(super::pad("施設名前", 6), "施設名前");
    }
}
