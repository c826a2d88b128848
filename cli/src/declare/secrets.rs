//! The secrets file of `renkei apply --secrets FILE`: the pre-shared keys
//! that never go in the configuration file.
//!
//! ```toml
//! [psk]
//! kyoto-clinic = "a key of at least 16 bytes"
//! ```
//!
//! It must be a regular file owned by the user running renkei (or root)
//! with no access for group or others (`chmod 600`): a key readable by
//! others is refused before it is read.

use super::Problem;
use serde::Deserialize;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use zeroize::Zeroizing;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    psk: HashMap<String, String>,
}

/// Reads and checks the secrets file: keys by facility.
pub(crate) fn read(path: &str) -> Result<HashMap<String, Zeroizing<Vec<u8>>>, Vec<Problem>> {
    let one = |message: String| {
        vec![Problem {
            at: path.to_string(),
            message,
        }]
    };
    let meta = std::fs::metadata(path).map_err(|e| one(format!("secrets: cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(one("secrets: not a regular file".into()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(one(rust_i18n::t!(
            "files.secrets_mode",
            mode = format!("{mode:04o}"),
            path = path
        )
        .into_owned()));
    }
    // Who runs renkei: the owner of its own /proc entry.
    let me = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    if meta.uid() != me && meta.uid() != 0 {
        return Err(one(format!(
            "secrets: owned by uid {}, neither the user running renkei (uid {me}) nor root; refusing it",
            meta.uid()
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| one(format!("secrets: cannot read it: {e}")))?,
    );
    let raw: Raw = toml::from_str(&text).map_err(|e| {
        let at = match e.span() {
            Some(s) => format!("{path}:{}", super::line_of(&text, s.start)),
            None => path.to_string(),
        };
        // The parser's message may quote the line: say only what is wrong.
        vec![Problem {
            at,
            message: format!("secrets: {}", e.message().trim()),
        }]
    })?;
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (name, key) in raw.psk {
        let key = Zeroizing::new(key);
        if key.len() < crate::registry::MIN_PSK_LEN {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&name))
                .map_or(1, |i| i + 1);
            problems.push(Problem {
                at: format!("{path}:{line}"),
                message: format!(
                    "secrets: the key of '{name}' is {} bytes; at least {} are required",
                    key.len(),
                    crate::registry::MIN_PSK_LEN
                ),
            });
            continue;
        }
        out.insert(name, Zeroizing::new(key.as_bytes().to_vec()));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
