//! Parsing, planning (diff, set checks) and the round trip of the
//! declarative file and the CSV.

use super::*;
use crate::registry::Hub;
use crate::state::StateDir;

fn temp_state(tag: &str) -> StateDir {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "renkei-declare-{tag}-{}-{}",
        std::process::id(),
        u64::from_ne_bytes(b)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    StateDir::new(dir)
}

fn hub() -> Hub {
    Hub {
        id: pki::Identity::parse("hub.example.jp").unwrap(),
        public_addrs: vec![PublicAddr::Ip("192.0.2.1".parse().unwrap())],
        profile: "cryptrec".into(),
    }
}

const FILE: &str = r#"[hub]
id = "hub.example.jp"
public_addrs = ["192.0.2.1"]

[[facility]]
name = "kyoto"
display_name = "京都中央クリニック"
medical_code = "2612345678"
id = "kyoto.example.jp"
auth = "psk"
router = "yamaha"
remote_ts = ["10.1.0.0/24"]
notes = "担当: 山田"

[[facility]]
name = "osaka"
id = "osaka.example.jp"
auth = "cert"
remote_ts = ["10.2.0.0/24", "10.20.0.0/24"]
remote_addr = "198.51.100.7"
start = true
"#;

fn secrets() -> HashMap<String, Zeroizing<Vec<u8>>> {
    [(
        "kyoto".to_string(),
        Zeroizing::new(b"0123456789abcdef0123".to_vec()),
    )]
    .into_iter()
    .collect()
}

/// Plans `text` against `peers`.
fn plan_for(text: &str, peers: &[Peer], prune: bool) -> Result<Plan, Vec<Problem>> {
    let declared = parse_toml("f.toml", text)?;
    let s = secrets();
    plan(
        &declared,
        &Current { hub: &hub(), peers },
        &Options {
            prune,
            secrets: &s,
            secrets_path: Some("s.toml"),
            now: "2026-01-01T00:00:00Z",
        },
        &|_| Ok(()),
    )
}

fn messages(e: Vec<Problem>) -> Vec<String> {
    e.into_iter().map(|p| p.to_string()).collect()
}

/// The peers a plan would leave (added and changed ones).
fn result_peers(plan: &Plan) -> Vec<Peer> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Add(p) | Action::Change(p, _) => Some((**p).clone()),
            Action::Remove(_) => None,
        })
        .collect()
}

#[test]
fn adds_then_nothing_then_field_by_field_changes() {
    let p = plan_for(FILE, &[], false).unwrap();
    assert_eq!(p.actions.len(), 2);
    assert!(p.public_addrs.is_none());
    let peers = result_peers(&p);
    assert_eq!(
        peers[0].label.display_name.as_deref(),
        Some("京都中央クリニック")
    );
    assert_eq!(peers[0].router, Router::Yamaha);
    // The same file against its result: nothing to do.
    let again = plan_for(FILE, &peers, false).unwrap();
    assert!(again.is_empty(), "{:?}", again.actions);
    assert_eq!(again.unchanged, 2);
    // One field each.
    let changed = FILE
        .replace("京都中央クリニック", "京都北クリニック")
        .replace("\"10.20.0.0/24\"", "\"10.21.0.0/24\"");
    let p = plan_for(&changed, &peers, false).unwrap();
    let diffs: Vec<(String, Vec<FieldChange>)> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Change(p, d) => (p.name.clone(), d.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        diffs,
        vec![
            (
                "kyoto".to_string(),
                vec![FieldChange {
                    field: "display_name",
                    old: "京都中央クリニック".into(),
                    new: "京都北クリニック".into()
                }]
            ),
            (
                "osaka".to_string(),
                vec![FieldChange {
                    field: "remote_ts",
                    old: "10.2.0.0/24,10.20.0.0/24".into(),
                    new: "10.2.0.0/24,10.21.0.0/24".into()
                }]
            )
        ]
    );
    // The display name is no tunnel change; the selectors are.
    assert!(!peers[0].tunnel_differs(&result_peers(&p)[0]));
    assert!(peers[1].tunnel_differs(&result_peers(&p)[1]));
}

#[test]
fn facilities_left_out_are_kept_unless_pruned() {
    let peers = result_peers(&plan_for(FILE, &[], false).unwrap());
    let only_osaka = FILE[..FILE.find("[[facility]]").unwrap()].to_string()
        + &FILE[FILE.rfind("[[facility]]").unwrap()..];
    let kept = plan_for(&only_osaka, &peers, false).unwrap();
    assert!(kept.actions.is_empty());
    assert_eq!(kept.kept, vec!["kyoto".to_string()]);
    let pruned = plan_for(&only_osaka, &peers, true).unwrap();
    assert!(
        matches!(&pruned.actions[..], [Action::Remove(n)] if n == "kyoto"),
        "{:?}",
        pruned.actions
    );
}

#[test]
fn psk_from_secrets_kept_or_generated_never_invented() {
    // No key for a new PSK facility: refused, pointing at its psk line
    // (here: the facility).
    let no_key = FILE.replace("name = \"kyoto\"", "name = \"kobe\"");
    let e = messages(plan_for(&no_key, &[], false).unwrap_err());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("f.toml:5: facility 'kobe': psk-file: no pre-shared key"),
        "{e:?}"
    );
    // psk = "generate" makes one, once.
    let gen = no_key.replace("auth = \"psk\"", "auth = \"psk\"\npsk = \"generate\"");
    let p = plan_for(&gen, &[], false).unwrap();
    assert_eq!(p.generated.len(), 1);
    let key = p.generated[0].1.clone();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
    let peers = result_peers(&p);
    // Applied again: the key it has is kept (no new key each time).
    let again = plan_for(&gen, &peers, false).unwrap();
    assert!(again.generated.is_empty());
    assert!(again.is_empty(), "{:?}", again.actions);
    // A key in the file is refused.
    let inline = FILE.replace(
        "auth = \"psk\"",
        "auth = \"psk\"\npsk = \"secret123456789012\"",
    );
    let e = messages(plan_for(&inline, &[], false).unwrap_err());
    assert!(
        e[0].starts_with("f.toml:11: facility 'kyoto': psk-file: the only value"),
        "{e:?}"
    );
    // A new key from the secrets file is a change that shows no key.
    let mut old = peers.clone();
    old[0].name = "kyoto".into();
    if let ike::PeerAuth::Psk(k) = &mut old[0].auth {
        *k = Zeroizing::new(b"another-key-0123456789".to_vec());
    }
    let p = plan_for(FILE, &old[..1], false).unwrap();
    let Action::Change(_, d) = &p.actions[0] else {
        panic!("{:?}", p.actions)
    };
    assert!(
        d.iter().any(|c| c.field == "psk" && c.new == "(new key)"),
        "{d:?}"
    );
    assert!(!format!("{d:?}").contains("0123456789abcdef"));
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let bad = r#"[[facility]]
name = "京都"
id = "a.example.jp"
auth = "cert"
remote_ts = ["10.9.0.0/24"]

[[facility]]
name = "b"
id = "b.example.jp"
auth = "cert"
remote_ts = ["10.8.0.0/24"]
ike = "aes128-sha1-modp1024"

[[facility]]
name = "c"
id = "c.example.jp"
auth = "cert"
colour = "red"
remote_ts = ["10.7.0.0/24"]

[[facility]]
name = "d"
id = "d.example.jp"
auth = "cert"
remote_ts = ["10.6.0.0/24"]

[[facility]]
name = "d"
id = "d2.example.jp"
auth = "cert"
remote_ts = ["10.5.0.0/24"]

[[facility]]
name = "e"
id = "e.example.jp"
auth = "cert"
medical_code = "99123456789"
remote_ts = ["10.4.0.0/24"]

[[facility]]
name = "f"
id = "f.example.jp"
auth = "cert"
remote_ts = ["10.2.128.0/17"]

[[facility]]
name = "g"
id = "f.example.jp"
auth = "cert"
remote_ts = ["10.3.0.0/24"]
"#;
    let e = messages(plan_for(bad, &[], false).unwrap_err());
    let expect = [
        "f.toml:18: facility 'c': unknown field `colour`",
        "f.toml:2: facility '京都': name: '京都' is not ASCII",
        "f.toml:12: facility 'b': ike: ",
        "f.toml:28: facility 'd' is declared twice (first at f.toml:22)",
        "f.toml:37: facility 'e': medical-code: '99123456789' is not 10 digits",
        "f.toml:48: facility 'g': id: identity f.example.jp already belongs to facility 'f'",
    ];
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expect) {
        assert!(got.starts_with(want), "{got} / {want}");
    }
    assert!(e[1].contains("display name or notes"), "{}", e[1]);
    // The refused proposal says why.
    assert!(
        e[2].contains("CRYPTREC") || e[2].contains("modp1024"),
        "{}",
        e[2]
    );
}

#[test]
fn overlaps_within_the_file_and_with_kept_facilities() {
    let peers = result_peers(&plan_for(FILE, &[], false).unwrap());
    // A new facility overlapping osaka (kept: not in this file).
    let file = r#"[[facility]]
name = "nara"
id = "nara.example.jp"
auth = "cert"
remote_ts = ["10.2.0.128/25"]

[[facility]]
name = "wakayama"
id = "wakayama.example.jp"
auth = "cert"
remote_ts = ["10.60.0.0/16"]

[[facility]]
name = "shiga"
id = "shiga.example.jp"
auth = "cert"
remote_ts = ["10.60.5.0/24"]
"#;
    let e = messages(plan_for(file, &peers, false).unwrap_err());
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e.iter().any(|m| m.starts_with("f.toml:5: facility 'nara': remote_ts: 10.2.0.128/25 overlaps 10.2.0.0/24 of facility 'osaka'")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("f.toml:17: facility 'shiga': remote_ts: 10.60.5.0/24 overlaps 10.60.0.0/16 of facility 'wakayama'")),
        "{e:#?}"
    );
    // With --prune, osaka goes and nara may take its prefixes.
    let e = messages(plan_for(file, &peers, true).unwrap_err());
    assert_eq!(e.len(), 1, "{e:#?}");
}

#[test]
fn malformed_file_and_wrong_hub() {
    let e = messages(parse_toml("f.toml", "[[facility]]\nname = \"a\"\nid = \n").unwrap_err());
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("f.toml:3: "), "{e:?}");
    let e = messages(parse_toml("f.toml", "[hub]\ncolour = 1\n").unwrap_err());
    assert!(
        e[0].starts_with("f.toml:2: unknown field `colour`"),
        "{e:?}"
    );
    let e = messages(
        plan_for(
            &FILE.replace("id = \"hub.example.jp\"", "id = \"other.example.jp\""),
            &[],
            false,
        )
        .unwrap_err(),
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("f.toml:1: id: this file is for hub 'other.example.jp'"),
        "{e:?}"
    );
    let e = messages(parse_toml("f.toml", "version = 2\n").unwrap_err_or_problems());
    assert!(e[0].contains("version: 2"), "{e:?}");
}

trait Problems {
    fn unwrap_err_or_problems(self) -> Vec<Problem>;
}

impl Problems for Result<Declared, Vec<Problem>> {
    fn unwrap_err_or_problems(self) -> Vec<Problem> {
        match self {
            Ok(d) => d.problems,
            Err(e) => e,
        }
    }
}

#[test]
fn dump_then_apply_on_an_empty_hub_gives_the_same_file() {
    let s1 = temp_state("rt1");
    let mut reg = Registry::init(&s1, &hub()).unwrap();
    let p = plan_for(FILE, &[], false).unwrap();
    write(&mut reg, &p, 0).unwrap();
    let first = dump(&reg.hub().unwrap(), &reg.peers().unwrap()).unwrap();
    // The Japanese text is written as it is, not escaped.
    assert!(
        first.contains("display_name = \"京都中央クリニック\""),
        "{first}"
    );
    let s2 = temp_state("rt2");
    let mut empty = Registry::init(&s2, &hub()).unwrap();
    let p = plan_for(&first, &[], false).unwrap();
    write(&mut empty, &p, 0).unwrap();
    let second = dump(&empty.hub().unwrap(), &empty.peers().unwrap()).unwrap();
    assert_eq!(first, second);
    let _ = std::fs::remove_dir_all(s1.as_ref());
    let _ = std::fs::remove_dir_all(s2.as_ref());
}

#[test]
fn csv_rows_with_bom_and_every_bad_row_located() {
    let ok = "\u{feff}name,display_name,medical_code,id,auth,psk,router,remote_addr,remote_ts,notes\n\
              kobe,神戸クリニック,2812345678,kobe.example.jp,psk,generate,yamaha,198.51.100.9,10.30.0.0/24 10.31.0.0/24,\"担当: 佐藤, 内線 12\"\n\
              himeji,,,himeji.example.jp,cert,,cisco,,10.32.0.0/24,\n";
    let d = csv::parse("f.csv", ok.as_bytes()).unwrap();
    assert_eq!(d.facilities.len(), 2);
    let (kobe, loc) = &d.facilities[0];
    assert_eq!(kobe.display_name.as_deref(), Some("神戸クリニック"));
    assert_eq!(kobe.remote_ts, vec!["10.30.0.0/24", "10.31.0.0/24"]);
    assert_eq!(kobe.notes.as_deref(), Some("担当: 佐藤, 内線 12"));
    assert_eq!(loc.at(Some("remote_ts")), "f.csv:2, column remote_ts");
    let s = HashMap::new();
    let p = plan(
        &d,
        &Current {
            hub: &hub(),
            peers: &[],
        },
        &Options {
            prune: false,
            secrets: &s,
            secrets_path: None,
            now: "t",
        },
        &|_| Ok(()),
    )
    .unwrap();
    assert_eq!(p.actions.len(), 2);
    assert_eq!(p.generated.len(), 1);

    let bad = "name,id,auth,remote_ts,medical_code,start\n\
               a,a.example.jp,psk,10.40.0.0/24,,\n\
               b,b.example.jp,certificate,10.41.0.0/24,,maybe\n\
               ,c.example.jp,cert,10.42.0.0/24,,\n\
               d,d.example.jp,cert,10.43.0.0/24,１２３４５６７８９０,\n\
               e,e.example.jp,cert,10.43.0.0/25,,\n";
    let d = csv::parse("f.csv", bad.as_bytes());
    let e = messages(d.unwrap_err());
    assert_eq!(
        e,
        vec![
            "f.csv:3, column auth: facility 'b': auth: 'certificate' is neither psk nor cert",
            "f.csv:3, column start: facility 'b': start: 'maybe' is neither yes nor no",
            "f.csv:4, column name: facility '': name is empty",
        ]
    );
    // Rows that parse are then validated and checked as a set.
    let bad2 = "name,id,auth,remote_ts,medical_code\n\
               a,a.example.jp,psk,10.40.0.0/24,\n\
               d,d.example.jp,cert,10.43.0.0/24,１２３４５６７８９０\n\
               f,f.example.jp,cert,10.44.0.0/24,\n\
               e,e.example.jp,cert,10.44.0.0/25,\n";
    let d = csv::parse("f.csv", bad2.as_bytes()).unwrap();
    let e = messages(
        plan(
            &d,
            &Current {
                hub: &hub(),
                peers: &[],
            },
            &Options {
                prune: false,
                secrets: &s,
                secrets_path: None,
                now: "t",
            },
            &|_| Ok(()),
        )
        .unwrap_err(),
    );
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].starts_with("f.csv:2, column psk: facility 'a': psk-file: no pre-shared key"),
        "{e:#?}"
    );
    assert!(
        e[1].starts_with("f.csv:3, column medical_code: facility 'd': medical-code:"),
        "{e:#?}"
    );
    assert!(e[2].starts_with("f.csv:5, column remote_ts: facility 'e': remote_ts: 10.44.0.0/25 overlaps 10.44.0.0/24 of facility 'f'"), "{e:#?}");
    // Unknown and missing columns; Shift_JIS.
    let e = messages(csv::parse("f.csv", b"name,id,colour\n").unwrap_err());
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("f.csv:1: column 3 'colour' is not one renkei reads"));
    // "京都" in Shift_JIS.
    let sjis =
        b"name,id,auth,remote_ts,display_name\nk,k.example.jp,cert,10.50.0.0/24,\x8b\x9e\x93\x73\n";
    let e = messages(csv::parse("f.csv", sjis).unwrap_err());
    assert!(
        e[0].starts_with("f.csv:2: the file is not UTF-8 (Shift_JIS is not read)"),
        "{e:?}"
    );
}

#[test]
fn secrets_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_state("secrets");
    std::fs::create_dir_all(dir.as_ref()).unwrap();
    let path = dir.as_ref().join("secrets.toml");
    std::fs::write(
        &path,
        "[psk]\nkyoto = \"0123456789abcdef0123\"\nnara = \"short\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = messages(secrets::read(p).unwrap_err());
    assert!(e[0].contains("mode 0644 lets other users read"), "{e:?}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = messages(secrets::read(p).unwrap_err());
    assert_eq!(e.len(), 1);
    assert!(
        e[0].ends_with(":3: secrets: the key of 'nara' is 5 bytes; at least 16 are required"),
        "{e:?}"
    );
    std::fs::write(&path, "[psk]\nkyoto = \"0123456789abcdef0123\"\n").unwrap();
    let keys = secrets::read(p).unwrap();
    assert_eq!(&keys["kyoto"][..], b"0123456789abcdef0123");
    let _ = std::fs::remove_dir_all(dir.as_ref());
}

#[test]
fn medical_codes_and_labels() {
    assert!(registry::check_medical_code("1312345678").is_ok());
    assert!(registry::check_medical_code("4712345678").is_ok());
    for bad in [
        "131234567",
        "13123456789",
        "4812345678",
        "0012345678",
        "13-1234567",
        "１３１２３４５６７８",
    ] {
        assert!(registry::check_medical_code(bad).is_err(), "{bad}");
    }
    let l = Label {
        display_name: Some("".into()),
        notes: Some("一行目\n二行目".into()),
        medical_code: None,
    }
    .checked()
    .unwrap();
    assert_eq!(l.display_name, None);
    assert!(Label {
        display_name: Some("改行\nあり".into()),
        ..Label::default()
    }
    .checked()
    .is_err());
}
