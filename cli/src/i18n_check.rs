//! Checks that nothing operator-facing is left behind untranslated: every
//! key of `cli/locales/*.yml` has English and Japanese, every `t!("key")`
//! in the sources names a key that exists, and no command under
//! `cli/src/cmd/` prints or fails with a hard-coded message (a string
//! literal with words in it) that does not go through `t!`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every key of every locale file with its texts by language.
fn locale_keys() -> BTreeMap<String, (PathBuf, BTreeMap<String, String>)> {
    let mut keys = BTreeMap::new();
    for e in std::fs::read_dir(crate_dir().join("locales")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Mapping =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (k, v) in doc {
            let k = k.as_str().unwrap().to_string();
            if k == "_version" {
                continue;
            }
            let langs: BTreeMap<String, String> = v
                .as_mapping()
                .unwrap_or_else(|| panic!("{}: {k} is not a map of languages", path.display()))
                .iter()
                .map(|(l, t)| {
                    (
                        l.as_str().unwrap_or_default().to_string(),
                        t.as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let prev = keys.insert(k.clone(), (path.clone(), langs));
            assert!(prev.is_none(), "{k} is defined twice");
        }
    }
    keys
}

#[test]
fn every_key_has_english_and_japanese() {
    let keys = locale_keys();
    assert!(keys.len() > 100, "{}", keys.len());
    let mut problems = Vec::new();
    for (k, (path, langs)) in &keys {
        for lang in crate::i18n::LANGUAGES {
            if langs.get(lang).is_none_or(|t| t.trim().is_empty()) {
                problems.push(format!("{}: {k} has no {lang}", path.display()));
            }
        }
        for lang in langs.keys() {
            if !crate::i18n::LANGUAGES.contains(&lang.as_str()) {
                problems.push(format!(
                    "{}: {k} has unknown language {lang}",
                    path.display()
                ));
            }
        }
        // The same placeholders on both sides.
        let holes = |t: &str| {
            let mut v: Vec<String> = t
                .split("%{")
                .skip(1)
                .filter_map(|r| r.split_once('}').map(|(h, _)| h.to_string()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if let (Some(en), Some(ja)) = (langs.get("en"), langs.get("ja")) {
            if holes(en) != holes(ja) {
                problems.push(format!(
                    "{}: {k}: placeholders differ: en {:?}, ja {:?}",
                    path.display(),
                    holes(en),
                    holes(ja)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The first string literal right after `open` (a macro's opening
/// parenthesis), if the argument starts with one.
fn first_literal(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let body = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.push(chars.next()?);
            }
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Whether a format string has words outside its `{…}` placeholders.
fn has_words(literal: &str) -> bool {
    let mut depth = 0;
    let mut text = String::new();
    for c in literal.replace("{{", "").replace("}}", "").chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            c if depth == 0 => text.push(c),
            _ => {}
        }
    }
    // Escapes (\n, \t) are not words.
    let text = text.replace("\\n", " ").replace("\\t", " ");
    text.chars().filter(|c| c.is_alphabetic()).count() >= 2
}

/// Literals in cli/src/cmd that must stay as they are, with the reason.
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "status.rs",
        "{}p/{}B",
        "packet/byte counters: units, as in the JSON",
    ),
    (
        "hub.rs",
        "renkei {} {}",
        "the new CA's subject name (a certificate field)",
    ),
    ("backup.rs", ".{name}.", "the staging directory's file name"),
    (
        "status.rs",
        "{}m{:02}s",
        "a duration (4m10s): units, as in the table",
    ),
    (
        "status.rs",
        "{}h{:02}m",
        "a duration (1h02m): units, as in the table",
    ),
    (
        "status.rs",
        "{}d{:02}h",
        "a duration (3d04h): units, as in the table",
    ),
    (
        "diagnose.rs",
        "diagnose.{key}.",
        "builds a locale key for t!, not a message",
    ),
    (
        "diagnose.rs",
        "IKE {} / ESP {}",
        "protocol names before the proposal strings",
    ),
];

/// Where in `cli/src/cmd/*.rs` a message is written, failed with or given
/// as context without `t!`: `(file, line, literal)`.
fn hard_coded(dir: &Path) -> Vec<(String, usize, String)> {
    const MACROS: [&str; 11] = [
        "println!(",
        "eprintln!(",
        "print!(",
        "eprint!(",
        "writeln!(",
        "write!(",
        "bail!(",
        "anyhow!(",
        "format!(",
        ".context(",
        "prompt_password(",
    ];
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let src = std::fs::read_to_string(&path).unwrap();
        // Tests may say what they like.
        let src = src.split("#[cfg(test)]").next().unwrap_or_default();
        for m in MACROS {
            let mut at = 0;
            while let Some(i) = src[at..].find(m) {
                let start = at + i + m.len();
                at = start;
                // `writeln!(out, "…")`: the literal follows the writer.
                let rest = if m.starts_with("write") {
                    src[start..].split_once(',').map_or("", |(_, r)| r)
                } else {
                    &src[start..]
                };
                let Some(lit) = first_literal(rest) else {
                    continue;
                };
                if !has_words(&lit) {
                    continue;
                }
                if ALLOWED
                    .iter()
                    .any(|(f, l, _)| *f == file && lit.starts_with(l))
                {
                    continue;
                }
                let line = src[..start].lines().count();
                found.push((file.clone(), line, lit));
            }
        }
    }
    found
}

#[test]
fn no_command_prints_a_hard_coded_message() {
    let found = hard_coded(&crate_dir().join("src/cmd"));
    assert!(
        found.is_empty(),
        "operator-facing text must go through t!(\"area.key\") with the text in \
         cli/locales/<area>.yml (or, for a machine format, into ALLOWED with a reason):\n{}",
        found
            .iter()
            .map(|(f, l, s)| format!("  cli/src/cmd/{f}:{l}: \"{s}\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_scan_finds_a_new_hard_coded_message() {
    let dir = std::env::temp_dir().join(format!("renkei-i18n-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("new.rs"),
        "fn f() -> anyhow::Result<()> {\n    println!(\"{}\", t!(\"peer.added\"));\n    \
         println!(\"{:<8} {}\", a, b);\n    bail!(\n        \"name: {name} is taken\"\n    );\n}\n",
    )
    .unwrap();
    let found = hard_coded(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].2, "name: {name} is taken");
}

#[test]
fn every_key_the_sources_use_exists() {
    let keys = locale_keys();
    let mut files = Vec::new();
    rust_files(&crate_dir().join("src"), &mut files);
    let mut missing = Vec::new();
    for path in files {
        let src = std::fs::read_to_string(&path).unwrap();
        for (i, _) in src.match_indices("t!(") {
            let prev = src[..i].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `print!(`, `assert!(`
            }
            let line_start = src[..i].rfind('\n').map_or(0, |n| n + 1);
            if src[line_start..i].trim_start().starts_with("//") {
                continue; // a comment
            }
            if let Some(key) = first_literal(&src[i + 3..]) {
                if key.contains('.') && !keys.contains_key(&key) && !key.contains(' ') {
                    missing.push(format!("{}: {key}", path.display()));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys used but in no locale file:\n{}",
        missing.join("\n")
    );
}
