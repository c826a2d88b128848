//! The registry in PostgreSQL (issue #17 item 1): the operator commands
//! against a real PostgreSQL 15 cluster started for each test
//! (`renkei_interop_tests::postgres::PgCluster`), TLS to it, concurrent
//! writers, and an outage of the database while tunnels run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::postgres::PgCluster;
use renkei_interop_tests::{renkei_bin, Facility, Lab, Role};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("renkei-pgt-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `renkei --state STATE ARGS` with English messages and no
/// RENKEI_REGISTRY from the caller's environment.
fn renkei(state: &Path, args: &[&str]) -> Output {
    Command::new(renkei_bin())
        .env("LC_ALL", "C")
        .env_remove("RENKEI_REGISTRY")
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one-line error of a refused command; nothing on stdout.
fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn operator_commands_share_one_registry_in_postgresql() {
    let pg = PgCluster::start();
    let dir = temp_dir("ops");
    let (a, b) = (dir.join("hub-a"), dir.join("hub-b"));
    let psk = dir.join("psk");
    std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
    let psk = psk.to_str().unwrap();

    // A URL with a password is not written into the state directory.
    let with_pw = pg.url().replace("renkei@", "renkei:secret@");
    let e = refused(&renkei(
        &a,
        &["init", "--hub-id", "hub.example", "--registry", &with_pw],
    ));
    assert!(
        e.contains("carries a password") && !e.contains("secret"),
        "{e}"
    );
    assert!(!a.join("registry.url").exists());

    ok(&renkei(
        &a,
        &[
            "init",
            "--hub-id",
            "hub.example",
            "--public-addr",
            "192.0.2.1",
            "--registry",
            &pg.url(),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(a.join("registry.url"))
            .unwrap()
            .trim(),
        pg.url()
    );
    assert!(!a.join("registry.db").exists(), "no SQLite file beside it");
    // The database holds the hub now: a second init is refused.
    let e = refused(&renkei(
        &b,
        &["init", "--hub-id", "other.example", "--registry", &pg.url()],
    ));
    assert!(
        e.contains("already holds the registry of hub hub.example"),
        "{e}"
    );
    assert!(!b.exists() || std::fs::read_dir(&b).unwrap().next().is_none());

    // Remembered: no --registry needed after init.
    ok(&renkei(
        &a,
        &[
            "peer",
            "add",
            "kyoto",
            "--id",
            "kyoto.example",
            "--psk-file",
            psk,
            "--remote-ts",
            "198.51.100.0/26",
        ],
    ));
    ok(&renkei(
        &a,
        &[
            "peer",
            "add",
            "osaka",
            "--id",
            "osaka.example",
            "--cert",
            "--remote-ts",
            "198.51.100.64/26",
        ],
    ));
    ok(&renkei(
        &a,
        &[
            "cert",
            "issue",
            "osaka",
            "--out",
            dir.join("osaka").to_str().unwrap(),
        ],
    ));
    ok(&renkei(&a, &["peer", "set", "kyoto", "--mtu", "1400"]));
    // Refused input changes nothing, with one line naming the field.
    for (args, want) in [
        (
            vec![
                "peer",
                "add",
                "kyoto",
                "--id",
                "k2.example",
                "--psk-file",
                psk,
                "--remote-ts",
                "198.51.100.128/26",
            ],
            "name: facility 'kyoto' already exists",
        ),
        (
            vec![
                "peer",
                "add",
                "nara",
                "--id",
                "KYOTO.example",
                "--psk-file",
                psk,
                "--remote-ts",
                "198.51.100.128/26",
            ],
            "id: identity",
        ),
        (
            vec![
                "peer",
                "add",
                "nara",
                "--id",
                "nara.example",
                "--psk-file",
                psk,
                "--remote-ts",
                "198.51.100.32/27",
            ],
            "remote-ts: 198.51.100.32/27 overlaps",
        ),
        (
            vec!["peer", "set", "osaka", "--remote-ts", "198.51.100.0/25"],
            "overlaps",
        ),
    ] {
        let e = refused(&renkei(&a, &args));
        assert!(e.contains(want), "{args:?}: {e}");
    }
    // The other hub's state directory, given the URL, sees the same registry.
    let listed = ok(&renkei(&b, &["--registry", &pg.url(), "peer", "list"]));
    assert!(
        listed.contains("kyoto") && listed.contains("osaka") && !listed.contains("nara"),
        "{listed}"
    );
    let shown = ok(&renkei(
        &b,
        &["--registry", &pg.url(), "peer", "show", "kyoto"],
    ));
    assert!(shown.contains("1400"), "{shown}");
    let certs = ok(&renkei(&b, &["--registry", &pg.url(), "cert", "list"]));
    assert!(certs.contains("osaka"), "{certs}");
    let hub = ok(&renkei(&a, &["hub", "show"]));
    assert!(hub.contains("hub.example"), "{hub}");
    let registry_line = format!(
        "registry       PostgreSQL {}:{}/renkei as renkei",
        pg.dir().display(),
        pg.port()
    );
    assert!(hub.contains(&registry_line), "{hub}");
    // The rows really are in PostgreSQL.
    assert_eq!(
        pg.psql_in("renkei", "SELECT name FROM peers ORDER BY name")
            .trim(),
        "kyoto\nosaka"
    );
    assert_eq!(
        pg.psql_in(
            "renkei",
            "SELECT value FROM meta WHERE key = 'schema_version'"
        )
        .trim(),
        "3"
    );

    // backup copies the SQLite registry only: with PostgreSQL it says so.
    let pass = dir.join("pass");
    std::fs::write(&pass, "a long enough passphrase\n").unwrap();
    let e = refused(&renkei(
        &a,
        &[
            "backup",
            "--out",
            dir.join("b.age").to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    ));
    assert!(e.contains("pg_dump"), "{e}");
    assert!(!dir.join("b.age").exists());

    ok(&renkei(&a, &["peer", "remove", "osaka"]));
    let certs = ok(&renkei(&a, &["cert", "list"]));
    let osaka = certs.lines().find(|l| l.contains("osaka")).unwrap();
    assert!(!osaka.trim_end().ends_with('-'), "removal revokes: {certs}");
    assert_eq!(
        pg.psql_in("renkei", "SELECT count(*) FROM peers").trim(),
        "1"
    );

    // A database from a later renkei is refused and left alone.
    pg.psql_in(
        "renkei",
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
    );
    let e = refused(&renkei(&a, &["peer", "list"]));
    assert!(e.contains("schema version 99 is newer"), "{e}");
    assert_eq!(
        pg.psql_in(
            "renkei",
            "SELECT value FROM meta WHERE key = 'schema_version'"
        )
        .trim(),
        "99"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_to_the_database_is_verified() {
    let pg = PgCluster::start();
    let dir = temp_dir("tls");
    let state = dir.join("hub");
    // Over TCP the cluster takes only TLS (pg_hba `hostssl`): success
    // here is a TLS session, verified against the test CA, with the
    // password from the passfile.
    ok(&renkei(
        &state,
        &[
            "init",
            "--hub-id",
            "hub.example",
            "--registry",
            &pg.tcp_url(),
        ],
    ));
    ok(&renkei(
        &state,
        &[
            "peer",
            "add",
            "kyoto",
            "--id",
            "kyoto.example",
            "--cert",
            "--remote-ts",
            "198.51.100.0/26",
        ],
    ));
    let tcp = pg.tcp_url();
    // sslmode=require: encrypted, the certificate not verified.
    let require = tcp.replace("sslmode=verify-full", "sslmode=require");
    assert!(ok(&renkei(&state, &["--registry", &require, "peer", "list"])).contains("kyoto"));
    // Another CA: refused, naming the database.
    let other = dir.join("other-ca.pem");
    let key = dir.join("other-ca.key");
    assert!(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=other",
            "-days",
            "1",
            "-keyout"
        ])
        .arg(&key)
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success());
    let wrong = tcp.replace(pg.ca_cert().to_str().unwrap(), other.to_str().unwrap());
    let e = refused(&renkei(&state, &["--registry", &wrong, "peer", "list"]));
    assert!(
        e.contains(&format!("TLS to PostgreSQL 127.0.0.1:{}/renkei", pg.port()))
            && e.contains("invalid peer certificate"),
        "{e}"
    );
    // verify-full checks the name: the certificate is not for 127.0.0.2
    // (where the server listens too); verify-ca checks only the chain.
    let other_name = tcp.replace("@127.0.0.1:", "@127.0.0.2:");
    let e = refused(&renkei(
        &state,
        &["--registry", &other_name, "peer", "list"],
    ));
    assert!(
        e.contains("TLS to PostgreSQL 127.0.0.2") && e.contains("not valid for name"),
        "{e}"
    );
    let verify_ca = other_name.replace("sslmode=verify-full", "sslmode=verify-ca");
    assert!(ok(&renkei(&state, &["--registry", &verify_ca, "peer", "list"])).contains("kyoto"));
    // Without TLS the server refuses (no `host` line in pg_hba.conf).
    let plain = tcp.replace("sslmode=verify-full", "sslmode=disable");
    let e = refused(&renkei(&state, &["--registry", &plain, "peer", "list"]));
    assert!(
        e.contains("refused the connection") || e.contains("pg_hba"),
        "{e}"
    );
    // Without the passfile: no password, refused.
    let nopass = tcp.replace(&format!("&passfile={}", pg.passfile().display()), "");
    let out = Command::new(renkei_bin())
        .env("LC_ALL", "C")
        .env("HOME", &dir)
        .env_remove("PGPASSFILE")
        .arg("--state")
        .arg(&state)
        .args(["--registry", &nopass, "peer", "list"])
        .output()
        .unwrap();
    let e = refused(&out);
    assert!(e.contains("registry: "), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several operator commands adding overlapping facilities at once:
/// exactly one is stored (SERIALIZABLE transactions, retried on conflict).
#[test]
fn concurrent_additions_never_store_overlapping_facilities() {
    let pg = PgCluster::start();
    let dir = temp_dir("race");
    let state = dir.join("hub");
    let psk = dir.join("psk");
    std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
    ok(&renkei(
        &state,
        &["init", "--hub-id", "hub.example", "--registry", &pg.url()],
    ));
    let mut handles = Vec::new();
    for i in 0..8 {
        let state = state.clone();
        let psk = psk.clone();
        handles.push(std::thread::spawn(move || {
            let name = format!("race{i}");
            let id = format!("{name}.example");
            let ts = format!("172.16.{i}.0/24,172.16.0.0/16");
            renkei(
                &state,
                &[
                    "peer",
                    "add",
                    &name,
                    "--id",
                    &id,
                    "--psk-file",
                    psk.to_str().unwrap(),
                    "--remote-ts",
                    &ts,
                ],
            )
        }));
    }
    let outs: Vec<Output> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let stored = outs.iter().filter(|o| o.status.success()).count();
    for o in outs.iter().filter(|o| !o.status.success()) {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("overlaps"), "{e}");
    }
    assert_eq!(stored, 1, "{outs:?}");
    assert_eq!(
        pg.psql_in(
            "renkei",
            "SELECT count(*) FROM peers WHERE name LIKE 'race%'"
        )
        .trim(),
        "1"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database stops while a tunnel runs: pings keep flowing, operator
/// changes fail with one clear line and change nothing, and after the
/// database is back `peer add` and `reload` work again.
#[test]
fn a_database_outage_keeps_tunnels_and_refuses_changes_clearly() {
    let pg = PgCluster::start();
    let mut facility = Facility::new(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        Role::SwanInitiates,
    );
    facility.hub_init_args = vec!["--registry".into(), pg.url()];
    facility.serve_args = vec!["--registry-poll".into(), "1".into()];
    let lab = Lab::start(facility);
    assert!(lab.swan_initiate());
    lab.wait_up(Duration::from_secs(30));
    assert!(lab.ping(false, 56, 3));
    assert_eq!(
        pg.psql_in("renkei", "SELECT name FROM peers").trim(),
        "kyoto"
    );

    let pinger = lab.spawn_ping(false, "0.2", 40);
    pg.stop();
    let psk = lab.dir.join("psk");
    let add = [
        "peer",
        "add",
        "nara",
        "--id",
        "nara.example",
        "--psk-file",
        psk.to_str().unwrap(),
        "--remote-ts",
        "198.51.100.128/26",
    ];
    let out = lab.renkei(&add);
    assert!(!out.status.success(), "{out:?}");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot be reached")
            && e.contains("nothing was changed")
            && e.contains("renkei reload"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    let out = lab.renkei(&["reload"]);
    assert!(!out.status.success(), "{out:?}");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot be reached"), "{e}");
    // The hub still answers and keeps its configuration and tunnel.
    assert_eq!(lab.facility_status()["state"], "up");
    assert!(
        lab.ping(true, 56, 3),
        "pings through the tunnel during the outage"
    );
    let (sent, received) = Lab::ping_result(pinger);
    assert_eq!(sent, received, "no ping lost while the database was down");

    pg.start_again();
    // The hub catches up by itself with changes it was not told of (made
    // while its control socket was out of reach, as by another hub's
    // operators): with the socket moved away, `peer add` changes only the
    // registry, and the running hub takes the facility on its own.
    let sock = lab.dir.join("hub/renkei.sock");
    let aside = lab.dir.join("renkei.sock.aside");
    std::fs::rename(&sock, &aside).unwrap();
    let out = lab.renkei(&[
        "peer",
        "add",
        "osaka",
        "--id",
        "osaka.example",
        "--psk-file",
        psk.to_str().unwrap(),
        "--remote-ts",
        "198.51.100.192/26",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not running"),
        "{out:?}"
    );
    std::fs::rename(&aside, &sock).unwrap();
    let has = |lab: &Lab, name: &str| {
        lab.status()["facilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == name)
    };
    lab.wait_for(
        "the hub to catch up with osaka",
        Duration::from_secs(60),
        |lab| has(lab, "osaka"),
    );
    assert!(
        lab.hub_log().contains("reachable again"),
        "{}",
        lab.hub_log()
    );
    assert_eq!(
        lab.facility_status()["state"],
        "up",
        "other facilities untouched"
    );
    let out = lab.renkei(&add);
    assert!(out.status.success(), "{out:?}");
    let out = lab.renkei(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        lab.status_of("nara")["state"],
        "down",
        "the hub took the new facility"
    );
    assert_eq!(lab.facility_status()["state"], "up");
    assert!(lab.ping(false, 56, 3));
}

/// Not a test: the time of 1,000 `peer add` commands, each its own
/// process, against PostgreSQL and SQLite. Run with
/// `cargo test -p renkei-interop-tests --test registry_pg -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_1000_peer_adds() {
    let pg = PgCluster::start();
    let dir = temp_dir("bench");
    let psk = dir.join("psk");
    std::fs::write(&psk, "0123456789abcdef0123\n").unwrap();
    let mut rows = Vec::new();
    pg.create_database("tls");
    let tls = pg.tcp_url().replace("/renkei?", "/tls?");
    for (backend, url) in [
        ("SQLite", None),
        ("PostgreSQL, Unix socket", Some(pg.url())),
        ("PostgreSQL, TCP + TLS", Some(tls)),
    ] {
        let state = dir.join(backend.replace([',', ' ', '+'], "_"));
        let mut init = vec!["init", "--hub-id", "hub.example"];
        if let Some(u) = &url {
            init.extend(["--registry", u.as_str()]);
        }
        ok(&renkei(&state, &init));
        let start = Instant::now();
        for i in 0..1000u32 {
            let name = format!("f{i}");
            let id = format!("{name}.example");
            let ts = format!("10.{}.{}.0/24", i / 256, i % 256);
            ok(&renkei(
                &state,
                &[
                    "peer",
                    "add",
                    &name,
                    "--id",
                    &id,
                    "--psk-file",
                    psk.to_str().unwrap(),
                    "--remote-ts",
                    &ts,
                ],
            ));
        }
        let t = start.elapsed();
        rows.push((backend, t));
    }
    println!("\n| registry | 1,000 `peer add` | per command |\n|---|---|---|");
    for (b, t) in rows {
        let s = t.as_secs_f64();
        println!("| {b} | {s:.1} s | {:.1} ms |", s * 1000.0 / 1000.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
