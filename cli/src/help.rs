//! `--help` in the operator's language. clap's derive takes its texts from
//! doc comments at compile time; under a Japanese locale the command tree
//! is walked before parsing and each command's summary and each argument's
//! help replaced by its text from `cli/locales/help.yml`. English keeps the
//! doc comments (the test below checks help.yml's English against them).

use rust_i18n::t;

/// The key of a command's summary (`help.peer.add._about`) or of one of its
/// arguments (`help.peer.add.psk_file`); `path` is empty for `renkei` itself.
fn key(path: &str, item: &str) -> String {
    if path.is_empty() {
        format!("help.{item}")
    } else {
        format!("help.{path}.{item}")
    }
}

/// `cmd` with every summary and argument help in the current language.
pub(crate) fn localize(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.after_help(t!("cli.exit_help").to_string());
    let lang = rust_i18n::locale().to_string();
    // English, the first language, is the doc comments themselves.
    if lang == crate::i18n::LANGUAGES[0] {
        return cmd;
    }
    walk(cmd, "", &lang)
}

/// The text of `key`, or None when no locale file has it (a command added
/// without its help.yml entries keeps its English; the test below fails).
fn text(key: &str, lang: &str) -> Option<String> {
    let s = t!(key, locale = lang).into_owned();
    (s != key).then_some(s)
}

fn walk(mut cmd: clap::Command, path: &str, lang: &str) -> clap::Command {
    if let Some(about) = text(&key(path, "_about"), lang) {
        cmd = cmd.about(about.clone()).long_about(about);
    }
    let ids: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_help().is_some())
        .map(|a| a.get_id().to_string())
        .collect();
    for id in ids {
        if let Some(help) = text(&key(path, &id), lang) {
            cmd = cmd.mut_arg(id, |a| a.help(help.clone()).long_help(help));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        cmd = cmd.mut_subcommand(name, |s| walk(s, &sub_path, lang));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every (key, English summary) of the command tree, from the doc comments.
    fn entries(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
        out.push((key(path, "_about"), about));
        for a in cmd.get_arguments() {
            if let Some(h) = a.get_help() {
                out.push((key(path, a.get_id().as_str()), h.to_string()));
            }
        }
        for s in cmd.get_subcommands() {
            let p = if path.is_empty() {
                s.get_name().to_string()
            } else {
                format!("{path}.{}", s.get_name())
            };
            entries(s, &p, out);
        }
    }

    /// Every command's summary and every argument's help has its entry in
    /// help.yml, in both languages, and the English entry is the doc
    /// comment's (so a changed doc comment is translated again).
    #[test]
    fn every_summary_and_argument_help_is_in_both_languages() {
        let mut v = Vec::new();
        entries(&crate::args::Cli::command(), "", &mut v);
        assert!(v.len() > 100, "{}", v.len());
        let mut problems = Vec::new();
        for (k, en) in v {
            let have_en = t!(&k, locale = "en");
            let have_ja = t!(&k, locale = "ja");
            if have_en != en {
                problems.push(format!("{k}:\n  en: {en:?}   (help.yml has {have_en:?})"));
            }
            if have_ja == k || have_ja == en || !have_ja.chars().any(|c| c > '\u{3000}') {
                problems.push(format!("{k}: no Japanese text in help.yml"));
            }
        }
        assert!(
            problems.is_empty(),
            "cli/locales/help.yml:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn japanese_help_replaces_summaries_and_argument_help() {
        let mut cmd = walk(crate::args::Cli::command(), "", "ja");
        let add = cmd
            .find_subcommand_mut("peer")
            .and_then(|p| p.find_subcommand_mut("add"))
            .unwrap()
            .clone();
        assert_eq!(add.get_about().unwrap().to_string(), "施設を登録します");
        let psk = add
            .get_arguments()
            .find(|a| a.get_id() == "psk_file")
            .unwrap();
        assert!(psk.get_help().unwrap().to_string().contains("事前共有鍵"));
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("状態ディレクトリ"), "{help}");
    }
}
