//! The operator's language and time zone.
//!
//! Messages are looked up with `rust_i18n::t!` in the files under
//! `cli/locales/` (one file per area, English and Japanese side by side,
//! rust-i18n's version-2 format). The language is Japanese when the
//! locale (`LC_ALL`, then `LC_MESSAGES`, then `LANG`, as POSIX orders
//! them) starts with `ja`, English otherwise. Times shown to an operator
//! are in the local time zone (`TZ`, else `/etc/localtime`); JSON output
//! and the audit log stay UTC (RFC 3339).

/// The languages renkei speaks.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const LANGUAGES: [&str; 2] = ["en", "ja"];

/// The language the environment asks for: "ja" or "en".
pub(crate) fn language_from_env() -> &'static str {
    let var = ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_default();
    language_of(&var)
}

/// "ja" for a locale name such as `ja_JP.UTF-8`, "en" for anything else
/// (including `C` and `POSIX`).
pub(crate) fn language_of(locale: &str) -> &'static str {
    if locale.starts_with("ja") {
        "ja"
    } else {
        "en"
    }
}

/// Sets the process's language from the environment. Called once, first
/// thing in `main`.
pub(crate) fn init() {
    rust_i18n::set_locale(language_from_env());
}

/// A Unix time as the operator reads it: local date and time with the
/// zone's abbreviation, e.g. `2026-11-30 18:00:00 JST`. Falls back to UTC
/// when the zone cannot be read.
pub(crate) fn local_time(unix_secs: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_second(unix_secs) else {
        return unix_secs.to_string();
    };
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

/// An RFC 3339 UTC time (as JSON and the audit log carry it) shown in the
/// local time zone; the text itself if it does not parse.
pub(crate) fn local_time_rfc3339(utc: &str) -> String {
    match utc.parse::<jiff::Timestamp>() {
        Ok(ts) => local_time(ts.as_second()),
        Err(_) => utc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_locales_are_japanese_and_everything_else_english() {
        assert_eq!(language_of("ja_JP.UTF-8"), "ja");
        assert_eq!(language_of("ja"), "ja");
        assert_eq!(language_of("C"), "en");
        assert_eq!(language_of("C.UTF-8"), "en");
        assert_eq!(language_of("en_US.UTF-8"), "en");
        assert_eq!(language_of(""), "en");
    }

    #[test]
    fn both_languages_have_every_common_message() {
        for lang in LANGUAGES {
            let text = rust_i18n::t!("common.error", locale = lang);
            assert_ne!(text, "common.error", "{lang} lacks common.error");
        }
        assert_eq!(rust_i18n::t!("common.error", locale = "ja"), "エラー");
    }

    #[test]
    fn times_are_local_and_utc_parses() {
        // 2026-11-30T00:00:00Z
        let t = 1_796_000_000 - 1_796_000_000 % 86_400;
        let s = local_time(t);
        assert!(s.len() >= 19, "{s}");
        assert_eq!(local_time_rfc3339("not a time"), "not a time");
    }
}
