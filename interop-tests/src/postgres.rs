//! A throw-away PostgreSQL cluster for tests (issue #17): Debian's
//! PostgreSQL 15 binaries (`initdb`, `pg_ctl`) run as the unprivileged
//! `postgres` user in a new temporary directory, on a free TCP port of
//! 127.0.0.1 and 127.0.0.2 (TLS only, SCRAM passwords; the server's
//! certificate names only 127.0.0.1 and localhost) and a Unix socket in that
//! directory (no password). Never the system cluster.
//!
//! ```ignore
//! // As the tests use it (registry_pg.rs, two_hubs.rs):
//! let pg = renkei_interop_tests::postgres::PgCluster::start();
//! let url = pg.url();          // postgresql://renkei@/renkei?host=…&port=…
//! pg.stop();                   // an outage
//! pg.start_again();            // back
//! // dropped: stopped and its directory removed, also when a test panics
//! ```
//!
//! The database `renkei` is owned by the role `renkei`; [`PgCluster::tcp_url`]
//! reaches it over TLS with the password in [`PgCluster::passfile`] and the
//! server certificate signed by [`PgCluster::ca_cert`] (for 127.0.0.1 and
//! localhost). Each cluster is independent, so tests may run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The password of role `renkei` (over TCP; the socket needs none).
pub const PASSWORD: &str = "renkei-test-password";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One running test cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
}

fn run_as_postgres(args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {args:?}: {e} (install-deps.sh installs postgresql)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its port").port()
}

impl PgCluster {
    /// Makes and starts a new cluster with the role and database `renkei`.
    pub fn start() -> PgCluster {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("renkei-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let cluster = PgCluster {
            dir,
            port: free_port(),
        };
        let d = cluster.dir.to_str().expect("utf-8 path").to_string();
        let must = |cmd: &mut Command| {
            let out = cmd.output().expect("command");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        // The server's certificate, from a CA of the test's own.
        let (ca_key, ca, key, csr, cert, ext) = (
            format!("{d}/ca.key"),
            format!("{d}/ca.pem"),
            format!("{d}/server.key"),
            format!("{d}/server.csr"),
            format!("{d}/server.pem"),
            format!("{d}/san.ext"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        let openssl = |args: &[&str]| must(Command::new("openssl").args(args));
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ca_key,
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &ca_key,
            "-subj",
            "/CN=renkei test CA",
            "-days",
            "2",
            "-out",
            &ca,
        ]);
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ]);
        openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=localhost",
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        let data = format!("{d}/data");
        must(Command::new("chown").args(["-R", "postgres:postgres", &d]));
        // Searchable by all: the hub drops CAP_DAC_OVERRIDE and still reaches
        // the socket here (the data directory stays 0700).
        must(Command::new("chmod").args(["0755", &d]));
        run_as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            &data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        let conf = format!(
            "listen_addresses = '127.0.0.1,127.0.0.2'\nport = {}\nunix_socket_directories = '{d}'\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n\
             fsync = off\nlogging_collector = off\nmax_connections = 50\n",
            cluster.port
        );
        let mut pgconf = std::fs::read_to_string(format!("{data}/postgresql.conf")).unwrap();
        pgconf.push_str(&conf);
        std::fs::write(format!("{data}/postgresql.conf"), pgconf).unwrap();
        // Over TCP only TLS with a password: a plain connection is refused,
        // so a test that connects over TCP proves TLS was used.
        std::fs::write(
            format!("{data}/pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.0/8 scram-sha-256\n",
        )
        .unwrap();
        std::fs::write(
            format!("{d}/pgpass"),
            format!("*:{}:*:renkei:{PASSWORD}\n", cluster.port),
        )
        .unwrap();
        must(Command::new("chmod").args(["0600", &format!("{d}/pgpass")]));
        must(Command::new("chown").args(["-R", "postgres:postgres", &d]));
        cluster.start_again();
        cluster.psql(&format!("CREATE ROLE renkei LOGIN PASSWORD '{PASSWORD}'"));
        cluster.psql("CREATE DATABASE renkei OWNER renkei");
        cluster
    }

    /// The cluster's directory (data, socket, certificates, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry URL over the Unix socket (no TLS, no password): what a
    /// hub in a network namespace uses.
    pub fn url(&self) -> String {
        self.url_of("renkei")
    }

    /// [`PgCluster::url`] for another database (see [`PgCluster::create_database`]).
    pub fn url_of(&self, db: &str) -> String {
        format!(
            "postgresql://renkei@/{db}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// A URL over TCP to 127.0.0.1, with TLS verified against
    /// [`PgCluster::ca_cert`] and the password from [`PgCluster::passfile`].
    pub fn tcp_url(&self) -> String {
        format!(
            "postgresql://renkei@127.0.0.1:{}/renkei?sslmode=verify-full&sslrootcert={}&passfile={}",
            self.port,
            self.ca_cert().display(),
            self.passfile().display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate that signed the server's.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A libpq password file (0600, owned by postgres; root reads it)
    /// holding role `renkei`'s password for the TCP port.
    pub fn passfile(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    /// Runs SQL as the superuser over the socket; returns psql's output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs SQL in database `db` as the superuser.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.to_str().expect("utf-8 path");
        let out = run_as_postgres(&[
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            host,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-c",
            sql,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new empty database owned by `renkei`; returns its socket URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name} OWNER renkei"));
        self.url_of(name)
    }

    /// Starts the server (again, after [`PgCluster::stop`]) and waits
    /// until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        run_as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            data.to_str().expect("utf-8 path"),
            "-l",
            log.to_str().expect("utf-8 path"),
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        run_as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            data.to_str().expect("utf-8 path"),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{BIN}/pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if std::env::var_os("RENKEI_KEEP_LAB").is_none() || !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
