//! Operator-facing text in Japanese under a Japanese locale and in English
//! otherwise, times in the local time zone, JSON in UTC (#18 item 3): the
//! same commands against one running hub under `LANG=ja_JP.UTF-8
//! TZ=Asia/Tokyo` and under `LC_ALL=C TZ=UTC`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{renkei_bin, Facility, Lab, Role};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Locale {
    Japanese,
    C,
}

/// `renkei --state STATE ARGS` in the hub's namespace under `locale`.
fn renkei_in(lab: &Lab, state: &Path, locale: Locale, args: &[&str]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.hub_ns])
        .arg(renkei_bin())
        .arg("--state")
        .arg(state)
        .args(args)
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .env_remove("LANG");
    match locale {
        Locale::Japanese => c.env("LANG", "ja_JP.UTF-8").env("TZ", "Asia/Tokyo"),
        Locale::C => c.env("LC_ALL", "C").env("TZ", "UTC"),
    };
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts `out` exited with `code` and says `ja` or `en`, whichever its
/// locale asks for, and not the other.
fn says(out: &Output, code: i32, locale: Locale, ja: &[&str], en: &[&str], what: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "{what} ({locale:?}): {t}");
    let (want, not) = match locale {
        Locale::Japanese => (ja, en),
        Locale::C => (en, ja),
    };
    for w in want {
        assert!(t.contains(w), "{what} ({locale:?}) lacks {w:?}:\n{t}");
    }
    for n in not {
        assert!(!t.contains(n), "{what} ({locale:?}) says {n:?}:\n{t}");
    }
}

#[test]
fn commands_speak_japanese_under_a_japanese_locale_and_english_otherwise() {
    let mut lab = Lab::start(Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    ));
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    let hub = lab.dir.join("hub");
    let psk = lab.dir.join("locale.psk");
    std::fs::write(&psk, "a pre-shared key of enough length\n").unwrap();
    let psk = psk.to_str().unwrap().to_string();

    for (i, locale) in [Locale::Japanese, Locale::C].into_iter().enumerate() {
        let run = |args: &[&str]| renkei_in(&lab, &hub, locale, args);
        let name = format!("clinic{i}");
        let net = format!("10.77.{i}.0/24");
        let add = |name: &str, net: &str| {
            run(&[
                "peer",
                "add",
                name,
                "--id",
                &format!("{name}.example"),
                "--psk-file",
                &psk,
                "--remote-ts",
                net,
            ])
        };

        // init (a second hub of its own).
        let other = lab.dir.join(format!("init-{i}"));
        let out = renkei_in(&lab, &other, locale, &["init", "--hub-id", "other.example"]);
        says(
            &out,
            0,
            locale,
            &["初期化しました"],
            &["initialized hub"],
            "init",
        );

        // peer add, told to the running hub.
        let out = add(&name, &net);
        says(
            &out,
            0,
            locale,
            &["を追加しました", "稼働中のハブに反映しました"],
            &["added facility", "applied to the running hub"],
            "peer add",
        );
        // Refused: the name is taken; an overlapping prefix; a Japanese name.
        let out = add(&name, "10.77.50.0/24");
        says(
            &out,
            1,
            locale,
            &["renkei: エラー: name:", "既に登録されています"],
            &["renkei: error: name:", "already exists"],
            "peer add of a taken name",
        );
        let out = add("overlap", &net);
        says(
            &out,
            1,
            locale,
            &["renkei: エラー: remote-ts:", "と重なっています"],
            &["renkei: error: remote-ts:", "overlaps"],
            "peer add of an overlapping prefix",
        );
        let out = add("京都病院", "10.77.51.0/24");
        says(
            &out,
            1,
            locale,
            &["エラー: name:", "日本語の表示名は施設名には使えません"],
            &["error: name:", "is not ASCII", "display name"],
            "peer add of a Japanese name",
        );

        // peer list.
        let out = run(&["peer", "list"]);
        says(
            &out,
            0,
            locale,
            &["施設名", "はい"],
            &["NAME", "ENABLED", "true"],
            "peer list",
        );
        assert!(text(&out).contains(&name));

        // status of the running hub: state words and times.
        let out = run(&["status"]);
        says(
            &out,
            0,
            locale,
            &["ハブ:", "確立", "JST"],
            &["hub: tun", " up ", "UTC"],
            "status",
        );
        // JSON stays UTC with English keys and values.
        let out = run(&["status", "--json"]);
        assert!(out.status.success());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let started = json["hub"]["started"].as_str().unwrap();
        assert!(
            started.ends_with('Z') || started.ends_with("+00:00"),
            "{started}"
        );
        let kyoto = json["facilities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "kyoto")
            .unwrap();
        assert_eq!(kyoto["state"], "up", "{json}");
        assert!(kyoto["since"].as_str().unwrap().ends_with('Z'), "{kyoto}");

        // hub show: labels and the certificate's validity in local time.
        let out = run(&["hub", "show"]);
        says(
            &out,
            0,
            locale,
            &["公開アドレス", "ハブの証明書", "有効期間", "JST"],
            &["public address", "hub certificate", "valid ", "UTC"],
            "hub show",
        );

        // audit show: local times.
        let out = run(&["audit", "show", "--tail", "3"]);
        says(&out, 0, locale, &["JST"], &["UTC"], "audit show");

        // An error of each exit status.
        let out = run(&["peer", "show", "no-such"]);
        says(
            &out,
            1,
            locale,
            &["'no-such' という施設はありません"],
            &["no facility named 'no-such'"],
            "exit 1",
        );
        let out = run(&["status", "--no-such-flag"]);
        assert_eq!(out.status.code(), Some(2), "exit 2: {}", text(&out));
        let stopped = lab.dir.join(format!("init-{i}"));
        let out = renkei_in(&lab, &stopped, locale, &["status"]);
        says(
            &out,
            3,
            locale,
            &["稼働していません"],
            &["is not running"],
            "exit 3",
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.hub_ns, "setpriv"])
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(renkei_bin())
            .arg("--state")
            .arg(&hub)
            .args(["peer", "list"])
            .env_remove("LC_ALL")
            .env_remove("LANG")
            .env(
                if locale == Locale::Japanese {
                    "LANG"
                } else {
                    "LC_ALL"
                },
                if locale == Locale::Japanese {
                    "ja_JP.UTF-8"
                } else {
                    "C"
                },
            )
            .output()
            .unwrap();
        says(
            &out,
            4,
            locale,
            &["権限がありません", "root として実行してください"],
            &["permission denied", "run renkei as root"],
            "exit 4",
        );

        // --help: summaries, argument help and the exit statuses.
        let out = run(&["--help"]);
        says(
            &out,
            0,
            locale,
            &["終了ステータス", "施設の追加・一覧", "状態ディレクトリ"],
            &["Exit status:", "Add, list, show", "State directory"],
            "--help",
        );
        let out = run(&["peer", "add", "--help"]);
        says(
            &out,
            0,
            locale,
            &["施設を登録します", "事前共有鍵を収めたファイル"],
            &["Register a facility", "File holding the pre-shared key"],
            "peer add --help",
        );
    }
    let _ = &mut lab;
}
