//! Libreswan's pluto as a facility: a second, independent IKEv2
//! implementation next to strongSwan.
//!
//! Debian's `libreswan` conflicts with strongSwan's packages, so
//! `scripts/install-deps.sh` extracts it (`apt-get download` + `dpkg -x`)
//! under [`LIBRESWAN_ROOT`] and installs its runtime libraries. [`Pluto`]
//! runs it in a facility's namespace of a [`Lab`] started with
//! [`Facility::charon`] off, with its own configuration, NSS database,
//! control socket and run directory under the facility's lab directory, and
//! stops it when dropped (also when the test panics; the lab then deletes
//! the namespace).
//!
//! This kernel has XFRM but no ESP: pluto's requests to install SAs and
//! policies would fail, and pluto would drop the IKE SA. An LD_PRELOAD
//! shim (`xfrm_ack_shim.c`, compiled with `cc` into the lab) acknowledges
//! those requests instead, so pluto negotiates, rekeys, runs liveness and
//! deletes for real, without a data plane. `net.core.xfrm_acq_expires` is
//! raised in the namespace so the kernel keeps the larval states of the
//! SPIs pluto allocates.

use crate::{must, run, Facility, Lab, HUB_NET};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where `scripts/install-deps.sh` extracts Libreswan (`RENKEI_LIBRESWAN`
/// overrides it).
pub const LIBRESWAN_ROOT: &str = "/opt/renkei-test/libreswan";

const SHIM_SOURCE: &str = include_str!("xfrm_ack_shim.c");

/// The extracted Libreswan's helper directory (pluto, whack, addconn).
pub fn libexec() -> PathBuf {
    let root = std::env::var("RENKEI_LIBRESWAN").unwrap_or_else(|_| LIBRESWAN_ROOT.into());
    let dir = Path::new(&root).join("usr/libexec/ipsec");
    assert!(
        dir.join("pluto").exists(),
        "Libreswan is not extracted under {root} (scripts/install-deps.sh does it)"
    );
    dir
}

/// How pluto's connection `hub` is configured.
#[derive(Debug, Clone)]
pub struct PlutoConf {
    /// `ike=` in Libreswan's syntax (e.g. `aes256-sha2_256;modp2048`).
    pub ike: String,
    /// `esp=`; with `pfs=yes` its group is used on rekey.
    pub esp: String,
    /// `ikelifetime=` and `salifetime=` in seconds, and `rekeymargin=`.
    pub ike_lifetime: u32,
    pub child_lifetime: u32,
    pub rekey_margin: u32,
    /// `dpddelay=`: liveness after this many silent seconds.
    pub dpd_delay: u32,
    /// `authby=` with a certificate (`ecdsa` or `rsasig`); None: PSK.
    pub cert_authby: Option<String>,
}

impl PlutoConf {
    /// A PSK connection with the given algorithms and long lifetimes.
    pub fn new(ike: &str, esp: &str) -> PlutoConf {
        PlutoConf {
            ike: ike.into(),
            esp: esp.into(),
            ike_lifetime: 3600,
            child_lifetime: 1800,
            rekey_margin: 60,
            dpd_delay: 30,
            cert_authby: None,
        }
    }
}

/// A facility whose tunnel end is Libreswan's pluto.
#[derive(Debug)]
pub struct Pluto {
    /// Its directory: ipsec.conf, ipsec.secrets, nss/, run/, pluto.log.
    pub dir: PathBuf,
    pub ns: String,
    child: Option<Child>,
}

impl Facility {
    /// A facility run by Libreswan ([`Pluto::start`]) rather than
    /// strongSwan; the hub is given `hub_ike`/`hub_esp` (strongSwan syntax).
    pub fn libreswan(hub_ike: &str, hub_esp: &str, role: crate::Role) -> Facility {
        let mut f = Facility::new(hub_ike, hub_esp, role);
        f.charon = false;
        f.hub_peer_args = vec![
            "--ike".into(),
            hub_ike.into(),
            "--esp".into(),
            hub_esp.into(),
        ];
        f
    }
}

impl Pluto {
    /// Starts pluto in facility `i`'s namespace and loads connection
    /// `hub`; it initiates only when told ([`Pluto::initiate`]).
    pub fn start(lab: &Lab, i: usize, conf: &PlutoConf) -> Pluto {
        let site = &lab.sites[i];
        let dir = site.dir.join("libreswan");
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["nss", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let libexec = libexec();
        // The shim, built for this lab.
        let shim_c = dir.join("xfrm_ack_shim.c");
        let shim = dir.join("xfrm_ack_shim.so");
        std::fs::write(&shim_c, SHIM_SOURCE).unwrap();
        must(
            Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&shim)
                .arg(&shim_c)
                .arg("-ldl"),
        );
        let nss = dir.join("nss");
        must(
            Command::new("certutil")
                .args(["-N", "--empty-password", "-d"])
                .arg(format!("sql:{}", nss.display())),
        );
        let (auth, secrets) = match &conf.cert_authby {
            Some(authby) => {
                let issued = site.dir.join("issued");
                let name = &site.name;
                let password =
                    std::fs::read_to_string(issued.join(format!("{name}.p12.password"))).unwrap();
                must(
                    Command::new("pk12util")
                        .arg("-i")
                        .arg(issued.join(format!("{name}.p12")))
                        .arg("-d")
                        .arg(format!("sql:{}", nss.display()))
                        .args(["-W", password.trim()]),
                );
                must(
                    Command::new("certutil")
                        .args(["-A", "-n", "renkei-ca", "-t", "CT,,", "-a", "-d"])
                        .arg(format!("sql:{}", nss.display()))
                        .arg("-i")
                        .arg(issued.join("ca.pem")),
                );
                let nick = nickname(&nss, name);
                (
                    format!(
                        "authby={authby}\n    leftcert=\"{nick}\"\n    leftid=@{name}.example\n    leftsendcert=always\n    rightca=%same"
                    ),
                    String::new(),
                )
            }
            None => {
                let id = site.psk_id();
                let left = if id.parse::<std::net::IpAddr>().is_ok() {
                    id.clone()
                } else {
                    format!("@{id}")
                };
                (
                    format!("authby=secret\n    leftid={left}"),
                    format!("{left} @hub.example : PSK \"{}\"\n", site.facility.psk),
                )
            }
        };
        let local_ts = site
            .facility
            .swan_local_ts
            .clone()
            .unwrap_or_else(|| site.net.clone());
        let remote_ts = site
            .facility
            .swan_remote_ts
            .clone()
            .unwrap_or_else(|| HUB_NET.to_string());
        let ipsec_conf = format!(
            "config setup\n    logtime=yes\n    logappend=no\n    plutodebug=base\n\nconn hub\n    ikev2=insist\n    {auth}\n    left={left}\n    leftsubnet={local_ts}\n    right={hub}\n    rightid=@hub.example\n    rightsubnet={remote_ts}\n    ike={ike}\n    esp={esp}\n    pfs=yes\n    encapsulation=yes\n    narrowing=yes\n    leftupdown=/bin/true\n    ikelifetime={ikel}s\n    salifetime={childl}s\n    rekeymargin={margin}s\n    rekeyfuzz=0%\n    dpddelay={dpd}\n    dpdtimeout={dpdt}\n    dpdaction=restart\n    auto=add\n",
            left = site.outer,
            hub = lab.hub_outer(),
            ike = conf.ike,
            esp = conf.esp,
            ikel = conf.ike_lifetime,
            childl = conf.child_lifetime,
            margin = conf.rekey_margin,
            dpd = conf.dpd_delay,
            dpdt = conf.dpd_delay * 4,
        );
        std::fs::write(dir.join("ipsec.conf"), ipsec_conf).unwrap();
        std::fs::write(dir.join("ipsec.secrets"), secrets).unwrap();
        let log = std::fs::File::create(dir.join("pluto.log")).unwrap();
        let script = format!(
            "sysctl -q -w net.core.xfrm_acq_expires=86400 && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /usr/libexec && ln -s {libexec} /usr/libexec/ipsec && LD_PRELOAD={shim} exec {libexec}/pluto --nofork --stderrlog --config {d}/ipsec.conf --rundir {d}/run --nssdir {d}/nss --secretsfile {d}/ipsec.secrets --ipsecdir {d}",
            libexec = libexec.display(),
            shim = shim.display(),
            d = dir.display(),
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &site.ns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pluto");
        let mut pluto = Pluto {
            dir,
            ns: site.ns.clone(),
            child: Some(child),
        };
        let ctl = pluto.dir.join("run/pluto.ctl");
        let started = std::time::Instant::now();
        // pluto listens once its control socket exists and answers.
        while !(ctl.exists() && pluto.whack(&["--status"]).status.success()) {
            if let Some(Ok(Some(status))) = pluto.child.as_mut().map(Child::try_wait) {
                panic!("pluto ended ({status}):\n{}", pluto.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "pluto did not open its control socket:\n{}",
                pluto.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let added = run(Command::new(libexec.join("addconn"))
            .arg("--config")
            .arg(pluto.dir.join("ipsec.conf"))
            .arg("--ctlsocket")
            .arg(&ctl)
            .arg("hub"));
        assert!(
            added.status.success(),
            "addconn hub: {}{}\n{}",
            String::from_utf8_lossy(&added.stdout),
            String::from_utf8_lossy(&added.stderr),
            pluto.log()
        );
        pluto
    }

    /// `whack --ctlsocket … ARGS`.
    pub fn whack(&self, args: &[&str]) -> Output {
        run(Command::new(libexec().join("whack"))
            .arg("--ctlsocket")
            .arg(self.dir.join("run/pluto.ctl"))
            .args(args))
    }

    /// `whack --initiate --name hub` (waits for the exchange); its output.
    pub fn initiate(&self) -> String {
        let out = self.whack(&["--initiate", "--name", "hub"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `whack --name hub --terminate`: deletes the IKE SA (with a Delete).
    pub fn terminate(&self) -> String {
        let out = self.whack(&["--name", "hub", "--terminate"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `whack --trafficstatus`.
    pub fn traffic_status(&self) -> String {
        String::from_utf8_lossy(&self.whack(&["--trafficstatus"]).stdout).into_owned()
    }

    /// `whack --status`.
    pub fn status(&self) -> String {
        String::from_utf8_lossy(&self.whack(&["--status"]).stdout).into_owned()
    }

    /// pluto's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pluto.log")).unwrap_or_default()
    }
}

/// The NSS nickname pk12util gave facility `name`'s certificate.
fn nickname(nss: &Path, name: &str) -> String {
    let list = must(
        Command::new("certutil")
            .args(["-L", "-d"])
            .arg(format!("sql:{}", nss.display())),
    );
    // "NICK    u,u,u" for a certificate with its key.
    list.lines()
        .find(|l| l.trim_end().ends_with("u,u,u"))
        .map(|l| {
            l.trim_end()
                .trim_end_matches("u,u,u")
                .trim_end()
                .to_string()
        })
        .unwrap_or_else(|| panic!("no certificate with a key for {name} in the NSS db:\n{list}"))
}

impl Drop for Pluto {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(150).collect();
            eprintln!(
                "===== {} (last lines) =====",
                self.dir.join("pluto.log").display()
            );
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
