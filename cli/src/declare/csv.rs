//! Bulk onboarding from a spreadsheet: `renkei apply --csv FILE`.
//!
//! The first row names the columns (any order; [`COLUMNS`] lists them, the
//! required ones first). Each further row is one facility, declared as a
//! `[[facility]]` of the TOML file would declare it; an empty cell is a
//! key left out. The file is UTF-8, with or without the byte-order mark
//! Excel writes ("CSV UTF-8"); Shift_JIS is refused with a message saying
//! how to save the sheet as UTF-8.

use super::{Auth, Declared, Facility, Loc, Problem};

/// The columns, in the order of the README's table.
pub(crate) const COLUMNS: &[&str] = &[
    "name",
    "id",
    "auth",
    "remote_ts",
    "display_name",
    "medical_code",
    "router",
    "psk",
    "remote_addr",
    "local_ts",
    "start",
    "enabled",
    "ike",
    "esp",
    "mtu",
    "notes",
];
const REQUIRED: &[&str] = &["name", "id", "auth", "remote_ts"];

/// Parses a CSV file's bytes; every bad row and field is reported.
pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<Declared, Vec<Problem>> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let at_line = |line: u64, field: Option<&str>| {
        Loc::Csv {
            path: path.to_string(),
            line,
        }
        .at(field)
    };
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64
            + 1;
        return Err(vec![Problem {
            at: at_line(line, None),
            message: rust_i18n::t!("files.csv_not_utf8").into_owned(),
        }]);
    }
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .from_reader(bytes);
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.to_ascii_lowercase()).collect(),
        Err(e) => {
            return Err(vec![Problem {
                at: at_line(1, None),
                message: format!("header: {e}"),
            }])
        }
    };
    let mut problems = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        if !COLUMNS.contains(&h.as_str()) {
            problems.push(Problem {
                at: at_line(1, None),
                message: format!(
                    "column {} '{h}' is not one renkei reads ({})",
                    i + 1,
                    COLUMNS.join(", ")
                ),
            });
        } else if headers[..i].contains(h) {
            problems.push(Problem {
                at: at_line(1, None),
                message: format!("column '{h}' is named twice"),
            });
        }
    }
    for r in REQUIRED {
        if !headers.iter().any(|h| h == r) {
            problems.push(Problem {
                at: at_line(1, None),
                message: format!("column '{r}' is required"),
            });
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut out = Declared {
        hub_at: path.to_string(),
        ..Declared::default()
    };
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(Problem {
                    at: at_line(line, None),
                    message: e.to_string(),
                });
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let get = |col: &str| {
            headers
                .iter()
                .position(|h| h == col)
                .and_then(|i| rec.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let mut bad = |col: &str, msg: String| {
            problems.push(Problem {
                at: at_line(line, Some(col)),
                message: msg,
            })
        };
        let name = get("name").unwrap_or_default();
        for r in REQUIRED {
            if get(r).is_none() {
                bad(r, format!("facility '{name}': {r} is empty"));
            }
        }
        let auth = match get("auth").as_deref() {
            Some("psk") | None => Auth::Psk,
            Some("cert") => Auth::Cert,
            Some(other) => {
                bad(
                    "auth",
                    format!("facility '{name}': auth: '{other}' is neither psk nor cert"),
                );
                Auth::Psk
            }
        };
        let mut flag = |col: &str, default: bool| match get(col).as_deref() {
            None => default,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "yes" | "true" | "1" => true,
                "no" | "false" | "0" => false,
                _ => {
                    bad(
                        col,
                        format!("facility '{name}': {col}: '{v}' is neither yes nor no"),
                    );
                    default
                }
            },
        };
        let start = flag("start", false);
        let enabled = flag("enabled", true);
        let mtu = match get("mtu") {
            None => None,
            Some(m) => match m.parse::<u32>() {
                Ok(m) => Some(m),
                Err(_) => {
                    problems.push(Problem {
                        at: at_line(line, Some("mtu")),
                        message: format!("facility '{name}': mtu: '{m}' is not a number"),
                    });
                    None
                }
            },
        };
        // Several prefixes in one cell: separated by spaces, ';' or ','.
        let list = |v: Option<String>| {
            v.map(|v| {
                v.split([' ', ';', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
        };
        let f = Facility {
            name: name.clone(),
            display_name: get("display_name"),
            medical_code: get("medical_code"),
            id: get("id").unwrap_or_default(),
            auth,
            psk: get("psk"),
            router: get("router"),
            remote_ts: list(get("remote_ts")).unwrap_or_default(),
            local_ts: list(get("local_ts")),
            remote_addr: get("remote_addr"),
            start,
            enabled,
            ike: get("ike"),
            esp: get("esp"),
            ike_lifetime: None,
            child_lifetime: None,
            child_bytes: None,
            dpd: None,
            mtu,
            notes: get("notes"),
        };
        out.facilities.push((
            f,
            Loc::Csv {
                path: path.to_string(),
                line,
            },
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
