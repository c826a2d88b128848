//! The Debian package (issue #19): made with cargo-deb, its contents
//! checked, and the packaged renkei run as a hub behind the packaged
//! firewall rules.
//!
//! The package is made with `cargo deb -p renkei-cli --no-build --profile
//! dev` from `target/debug/renkei`, the binary the suite has built already:
//! the package's layout, scripts and firewall rules are what is tested
//! here, and a release build would add about ten minutes on two cores to
//! every run (operators build with `cargo deb -p renkei-cli`, which makes
//! the release binary; README "Installing the package"). `--strip` has
//! cargo-deb strip the debug binary as the release profile does. The pinned cargo-deb warns that the dev profile
//! is meant for tests only; it is installed at that pinned version by
//! `scripts/install-deps.sh`. Without either, these tests fail (they do
//! not skip).
//!
//! Why the package is unpacked rather than installed: `dpkg -i` on the CI
//! machine would leave renkei installed there and run its maintainer
//! scripts against the machine's systemd, and `dpkg --root` does not run
//! them reliably outside a chroot. `dpkg-deb -x` unpacks exactly the files
//! `dpkg -i` installs, into a temporary directory, and the tests use them
//! as installed: the unit is checked with `systemd-analyze verify`, and the
//! packaged binary does `renkei init`, `peer add` and `renkei serve` in a
//! network namespace with the packaged nftables rules loaded there; a
//! strongSwan facility connects through them and `renkei status` answers.
//! The maintainer scripts (create `/var/lib/renkei`, `systemctl
//! daemon-reload`; nothing enabled or started) are checked as text.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use renkei_interop_tests::{must, run, Facility, Lab, Role, Topology, SERVER, SITE_INNER};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"))
}

/// The package and the directory it is unpacked in, made once per run.
struct Package {
    deb: PathBuf,
    root: PathBuf,
}

fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let built = target_dir().join("debug/renkei");
        assert!(
            built.exists(),
            "{} is missing: run `cargo build -p renkei-cli` (scripts/test.sh does)",
            built.display()
        );
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("renkei-deb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("renkei.deb");
        let out = run(Command::new(env!("CARGO"))
            .args([
                "deb",
                "-p",
                "renkei-cli",
                "--no-build",
                "--profile",
                "dev",
                "--strip",
                "--output",
            ])
            .arg(&deb)
            .current_dir(repo()));
        assert!(
            out.status.success(),
            "cargo deb failed (cargo-deb is installed by scripts/install-deps.sh): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let root = dir.join("root");
        must(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        eprintln!(
            "package: {} bytes; built binary {} bytes; packaged binary {} bytes",
            std::fs::metadata(&deb).unwrap().len(),
            std::fs::metadata(&built).unwrap().len(),
            std::fs::metadata(root.join("usr/bin/renkei"))
                .unwrap()
                .len()
        );
        Package { deb, root }
    })
}

/// The unpacked package is left for inspection when the tests end; the
/// next run removes those of processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("renkei-deb-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The package's control data, file list and files: the binary, the unit,
/// the sysctl.d file, the nftables rules, the monitoring files and the
/// docs, each as in the repository; minimal maintainer scripts.
#[test]
fn package_holds_binary_unit_sysctl_nftables_and_docs() {
    let p = package();
    let info = must(Command::new("dpkg-deb").arg("-I").arg(&p.deb));
    for want in [
        "Package: renkei\n".to_string(),
        format!("Version: {}-1\n", env!("CARGO_PKG_VERSION")),
        "Section: net\n".to_string(),
        "Recommends: nftables\n".to_string(),
    ] {
        assert!(info.contains(&want), "no {want:?} in\n{info}");
    }
    // Dependencies from the binary's shared libraries (dpkg-shlibdeps).
    let depends = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in\n{info}"));
    assert!(depends.contains("libc6"), "{depends}");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script} in\n{info}");
    }

    let list = must(Command::new("dpkg-deb").arg("-c").arg(&p.deb));
    let from_repo = [
        (
            "usr/lib/systemd/system/renkei.service",
            "dist/renkei.service",
        ),
        (
            "usr/lib/sysctl.d/60-renkei.conf",
            "dist/sysctl.d/60-renkei.conf",
        ),
        ("usr/share/renkei/renkei.nft", "dist/nftables/renkei.nft"),
        (
            "usr/share/renkei/prometheus/renkei-alerts.yml",
            "dist/prometheus/renkei-alerts.yml",
        ),
        (
            "usr/share/renkei/grafana/renkei-dashboard.json",
            "dist/grafana/renkei-dashboard.json",
        ),
        (
            "usr/share/renkei/keepalived/keepalived.conf",
            "dist/keepalived/keepalived.conf",
        ),
        (
            "usr/share/renkei/keepalived/renkei-notify",
            "dist/keepalived/renkei-notify",
        ),
        ("usr/share/doc/renkei/README.md", "README.md"),
        ("usr/share/doc/renkei/ARCHITECTURE.md", "ARCHITECTURE.md"),
        (
            "usr/share/doc/renkei/routers/yamaha.ja.md",
            "docs/routers/yamaha.ja.md",
        ),
        (
            "usr/share/doc/renkei/routers/cisco.en.md",
            "docs/routers/cisco.en.md",
        ),
    ];
    for (installed, source) in from_repo {
        assert!(
            list.contains(&format!("./{installed}\n")),
            "no {installed} in\n{list}"
        );
        assert_eq!(
            std::fs::read(p.root.join(installed)).unwrap(),
            std::fs::read(repo().join(source)).unwrap(),
            "{installed} differs from {source}"
        );
    }
    let routers = std::fs::read_dir(repo().join("docs/routers"))
        .unwrap()
        .count();
    assert_eq!(
        std::fs::read_dir(p.root.join("usr/share/doc/renkei/routers"))
            .unwrap()
            .count(),
        routers,
        "every router guide is packaged"
    );
    assert!(
        list.contains("./usr/share/doc/renkei/copyright\n"),
        "{list}"
    );

    // The binary: executable, runs, no debug info.
    let bin = p.root.join("usr/bin/renkei");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&bin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);
    let version = must(Command::new(&bin).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    // Section names from readelf (binutils, with build-essential): the
    // bytes alone would match the section names std's backtrace code holds.
    let sections = must(Command::new("readelf").args(["-S", "--wide"]).arg(&bin));
    assert!(sections.contains(".text"), "{sections}");
    // `.debug_gdb_scripts` is no debug info: a loaded section a debug
    // build carries (it names gdb's pretty-printers), kept by strip.
    let debug: Vec<&str> = sections
        .lines()
        .filter(|l| l.contains(".debug_") && !l.contains(".debug_gdb_scripts"))
        .collect();
    assert!(
        debug.is_empty(),
        "the packaged binary carries debug info:\n{sections}"
    );

    // Forwarding, both families.
    let sysctl = std::fs::read_to_string(p.root.join("usr/lib/sysctl.d/60-renkei.conf")).unwrap();
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        assert!(
            sysctl
                .lines()
                .any(|l| l.replace(' ', "") == format!("{key}=1")),
            "{sysctl}"
        );
    }

    // Minimal maintainer scripts: the state directory, systemd told;
    // nothing enabled or started, the state never removed.
    let scripts = repo().join("dist/debian");
    let postinst = std::fs::read_to_string(scripts.join("postinst")).unwrap();
    assert!(
        postinst.contains("install -d -m 0700 /var/lib/renkei"),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(scripts.join(script)).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        for never in ["enable", "start ", "rm -"] {
            assert!(!code.contains(never), "{script} runs {never:?}:\n{text}");
        }
        let check = run(Command::new("sh").arg("-n").arg(scripts.join(script)));
        assert!(check.status.success(), "{script}: {check:?}");
    }
}

/// The packaged unit runs the packaged binary's commands and passes
/// `systemd-analyze verify` (with its paths pointed into the unpacked
/// package, since the machine has no /usr/bin/renkei).
#[test]
fn packaged_unit_verifies_and_runs_the_packaged_binary() {
    let p = package();
    let unit =
        std::fs::read_to_string(p.root.join("usr/lib/systemd/system/renkei.service")).unwrap();
    let mut commands = Vec::new();
    for line in unit.lines() {
        if let Some(cmd) = line
            .strip_prefix("ExecStart=")
            .or_else(|| line.strip_prefix("ExecReload="))
        {
            let mut words = cmd.split_whitespace();
            let program = words.next().unwrap();
            assert_eq!(program, "/usr/bin/renkei", "{line}");
            let args: Vec<&str> = words.collect();
            let out = run(Command::new(p.root.join("usr/bin/renkei"))
                .args(&args)
                .arg("--help"));
            assert!(out.status.success(), "{line}: {out:?}");
            commands.push(args.join(" "));
        }
    }
    assert_eq!(commands, ["serve", "reload"]);
    let bin = p.root.join("usr/bin/renkei");
    let copy = p.root.parent().unwrap().join("renkei.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/renkei", bin.to_str().unwrap()),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown or misspelt settings are only warnings: none is allowed.
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

/// `renkei init`, `peer add` and `renkei serve` from the unpacked package
/// in a network namespace (the lab: a facility behind a NAT router, a
/// server network behind the hub), with the packaged nftables rules loaded
/// in the hub's namespace as README says (the TUN device is the lab's own,
/// so its name replaces `renkei0`): IKE and NAT-T pass the input chain, the
/// facility comes up, `renkei status` answers, and the facility reaches
/// the server only once the server network is in the `servers4` set.
#[test]
fn packaged_renkei_serves_behind_the_packaged_firewall() {
    let p = package();
    // The only test here that starts a lab: every renkei it runs is the
    // packaged one.
    std::env::set_var("RENKEI_BIN", p.root.join("usr/bin/renkei"));
    let lab = Lab::start_sites(
        Topology::Path {
            mtu: 1500,
            icmp: true,
            v6: false,
        },
        vec![Facility::new(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            Role::SwanInitiates,
        )],
    );
    let rules = std::fs::read_to_string(p.root.join("usr/share/renkei/renkei.nft")).unwrap();
    assert!(rules.contains("\"renkei0\""), "{rules}");
    let file = lab.dir.join("renkei.nft");
    std::fs::write(
        &file,
        rules.replace("\"renkei0\"", &format!("\"{}\"", lab.tun)),
    )
    .unwrap();
    let nft = |args: &[&str]| {
        must(
            Command::new("ip")
                .args(["netns", "exec", &lab.hub_ns, "nft"])
                .args(args),
        )
    };
    nft(&["-f", file.to_str().unwrap()]);
    let listed = nft(&["list", "table", "inet", "renkei"]);
    assert!(listed.contains("policy drop"), "{listed}");

    assert!(
        lab.swan_initiate(),
        "strongSwan could not connect through the rules"
    );
    lab.wait_up(Duration::from_secs(30));
    let status = lab.renkei(&["status"]);
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("kyoto") && text.contains("up"), "{text}");
    // The hub itself answers pings (input chain).
    assert!(lab.ping(false, 56, 2), "facility → hub ping");

    let ping_server = || {
        run(Command::new("ip").args([
            "netns",
            "exec",
            &lab.site_ns,
            "ping",
            "-n",
            "-q",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "-I",
            SITE_INNER,
            SERVER,
        ]))
        .status
        .success()
    };
    assert!(
        !ping_server(),
        "no server network configured: the forward chain must drop"
    );
    nft(&[
        "add",
        "element",
        "inet",
        "renkei",
        "servers4",
        "{ 203.0.113.64/26 }",
    ]);
    assert!(
        ping_server(),
        "facility → server ping with the server network set"
    );
}
