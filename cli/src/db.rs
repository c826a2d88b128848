//! The registry's execution layer: one small API over its two backends,
//! the embedded SQLite file (the default) and PostgreSQL (`--registry
//! postgresql://…`, issue #17).
//!
//! ```text
//!  registry.rs ── SQL written once, ?N placeholders ──▶ Db::execute / query / transaction
//!                                                        ├─ Sqlite: rusqlite, BEGIN IMMEDIATE
//!                                                        └─ Pg: postgres (sync), ?N → $N,
//!                                                           SERIALIZABLE, retried on 40001
//! ```
//!
//! Values cross the layer as [`Value`] (NULL, integer, text, bytes), rows
//! come back as [`Row`]s of them. DDL differs only in two type names
//! ([`Db::ddl`]: `INTEGER` → `BIGINT`, `BLOB` → `BYTEA`), so a column added
//! to `ADDED_COLUMNS` in `registry.rs` is added on both.
//!
//! The `postgres` client runs a small tokio runtime of its own and panics
//! when called on a thread that is inside another runtime (the daemon's
//! control loop, `spawn_blocking` threads): every call goes through
//! [`off_runtime`], which runs it on a plain scoped thread there.

use anyhow::{bail, Context, Result};
use postgres::types::{IsNull, ToSql, Type};
use rust_i18n::t;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        // Every integer the registry stores (seconds, bytes, MTUs) is far
        // below 2^63; saturate rather than wrap if one ever is not.
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `args![a, b, …]`: statement arguments as `&[Value]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::db::Value::from($v)),*][..]
    };
}
pub(crate) use args;

/// One result row.
#[derive(Debug)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0
            .get(i)
            .with_context(|| format!("registry: no column {i}"))
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .with_context(|| format!("registry: column {i} is NULL"))
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => bail!("registry: column {i} is not text ({v:?})"),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .with_context(|| format!("registry: column {i} is NULL"))
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            v => bail!("registry: column {i} is not an integer ({v:?})"),
        }
    }

    /// An unsigned integer (seconds, bytes, an MTU).
    pub(crate) fn opt_uint<T: TryFrom<i64>>(&self, i: usize) -> Result<Option<T>> {
        self.opt_int(i)?
            .map(|v| {
                T::try_from(v)
                    .map_err(|_| anyhow::anyhow!("registry: column {i} is out of range ({v})"))
            })
            .transpose()
    }

    pub(crate) fn uint<T: TryFrom<i64>>(&self, i: usize) -> Result<T> {
        self.opt_uint(i)?
            .with_context(|| format!("registry: column {i} is NULL"))
    }

    pub(crate) fn bool(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }

    pub(crate) fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Blob(b) => Ok(Some(b.clone())),
            v => bail!("registry: column {i} is not bytes ({v:?})"),
        }
    }
}

/// Which database a registry lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// The embedded SQLite file `STATE/registry.db`.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgresql://` URL.
    Postgres(String),
}

/// Checks that `url` is a PostgreSQL URL renkei can use (scheme, options
/// it knows), without connecting.
pub(crate) fn check_url(url: &str) -> Result<()> {
    PgTarget::parse(url).map(|_| ())
}

/// Whether a PostgreSQL URL carries a password (which renkei never writes
/// into the state directory).
pub(crate) fn url_has_password(url: &str) -> Result<bool> {
    Ok(PgTarget::parse(url)?.password_in_url)
}

/// A connection to the registry's database.
pub(crate) struct Db {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Pg {
        client: Box<Mutex<Option<postgres::Client>>>,
        /// host:port/database as user, for messages (never the password).
        target: String,
    },
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Runs `f` where the synchronous PostgreSQL client may block: on this
/// thread, or on a scoped thread when this one belongs to a tokio runtime.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A PostgreSQL error, made into one line that names the database; an
/// outage says what to do.
#[derive(Debug)]
struct PgError {
    message: String,
    /// A serialization failure or deadlock: the transaction may be retried.
    retry: bool,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {}

/// An error with its causes, on one line (`postgres::Error` shows only
/// its kind: "error performing TLS handshake").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

fn outage(target: &str, why: &dyn std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(PgError {
        message: t!("registry_db.outage", target = target, why = why.to_string()).into_owned(),
        retry: false,
    })
}

fn pg_error(target: &str, e: postgres::Error) -> anyhow::Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let retry = *code == postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
            || *code == postgres::error::SqlState::T_R_DEADLOCK_DETECTED;
        if *code == postgres::error::SqlState::INSUFFICIENT_PRIVILEGE {
            return anyhow::Error::new(PgError {
                message: t!(
                    "registry_db.privilege",
                    target = target,
                    message = db.message()
                )
                .into_owned(),
                retry: false,
            });
        }
        return anyhow::Error::new(PgError {
            message: t!(
                "registry_db.server_error",
                target = target,
                message = db.message(),
                code = code.code()
            )
            .into_owned(),
            retry,
        });
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return outage(target, &with_causes(&e));
    }
    anyhow::Error::new(PgError {
        message: t!(
            "registry_db.error",
            target = target,
            error = with_causes(&e)
        )
        .into_owned(),
        retry: false,
    })
}

/// `?N` placeholders (SQLite) as `$N` (PostgreSQL); quoted text is left
/// alone.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("an integer given for a column of type {ty}").into()),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_row(row: &postgres::Row) -> std::result::Result<Row, postgres::Error> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::VOID => None,
            _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

fn sqlite_row(row: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Text(v.to_string()),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(out))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// How many times a PostgreSQL transaction that lost a serialization
/// conflict is run again before the conflict is reported.
const PG_RETRIES: usize = 8;

impl Db {
    /// Opens the SQLite file at `path` (WAL, synchronous FULL, 5 s busy
    /// timeout).
    pub(crate) fn open_sqlite(path: &Path) -> Result<Db> {
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Db {
            inner: Inner::Sqlite(conn),
        })
    }

    /// Connects to the PostgreSQL database `url` names.
    pub(crate) fn connect_pg(url: &str) -> Result<Db> {
        let target = PgTarget::parse(url)?;
        let name = target.describe();
        let client = off_runtime(|| target.connect())?;
        Ok(Db {
            inner: Inner::Pg {
                client: Box::new(Mutex::new(Some(client))),
                target: name,
            },
        })
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Pg { .. })
    }

    /// Where this registry is, for messages (no password).
    pub(crate) fn describe(&self) -> String {
        match &self.inner {
            Inner::Sqlite(c) => format!("SQLite {}", c.path().unwrap_or("?")),
            Inner::Pg { target, .. } => format!("PostgreSQL {target}"),
        }
    }

    /// DDL written for SQLite, in this backend's types.
    pub(crate) fn ddl(&self, sql: &str) -> String {
        match self.inner {
            Inner::Sqlite(_) => sql.to_string(),
            Inner::Pg { .. } => pg_ddl(sql),
        }
    }

    fn with_pg<R: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> std::result::Result<R, postgres::Error> + Send,
    ) -> Result<R> {
        let Inner::Pg { client, target } = &self.inner else {
            unreachable!("with_pg on SQLite")
        };
        let mut guard = client.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard
            .as_mut()
            .ok_or_else(|| outage(target, &"the connection was closed"))?;
        off_runtime(|| f(c)).map_err(|e| pg_error(target, e))
    }

    /// Runs statements without arguments (DDL, several at once).
    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Pg { .. } => self.with_pg(|c| c.batch_execute(sql)),
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: &[Value]) -> Result<u64> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute(sql, rusqlite::params_from_iter(args))? as u64),
            Inner::Pg { .. } => {
                let sql = pg_sql(sql);
                let refs: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                self.with_pg(|c| c.execute(sql.as_str(), &refs))
            }
        }
    }

    /// Runs a query; returns every row.
    pub(crate) fn query(&self, sql: &str, args: &[Value]) -> Result<Vec<Row>> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut stmt = c.prepare(sql)?;
                let n = stmt.column_count();
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(args), |r| sqlite_row(r, n))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
            Inner::Pg { .. } => {
                let sql = pg_sql(sql);
                let refs: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                self.with_pg(|c| {
                    c.query(sql.as_str(), &refs)?
                        .iter()
                        .map(pg_row)
                        .collect::<std::result::Result<Vec<_>, _>>()
                })
            }
        }
    }

    /// The first row of a query, if any.
    pub(crate) fn query_opt(&self, sql: &str, args: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    /// Runs `f` in one transaction that sees no concurrent writer's
    /// effect: SQLite `BEGIN IMMEDIATE` (the write lock from the start),
    /// PostgreSQL `SERIALIZABLE` (run again, up to a few times, when it
    /// loses a conflict with another hub or command). An error from `f`
    /// rolls everything back. Not nested.
    pub(crate) fn transaction<R>(&self, mut f: impl FnMut(&Db) -> Result<R>) -> Result<R> {
        let (begin, attempts) = match self.inner {
            Inner::Sqlite(_) => ("BEGIN IMMEDIATE", 1),
            Inner::Pg { .. } => ("BEGIN ISOLATION LEVEL SERIALIZABLE", PG_RETRIES),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.batch(begin)?;
            let result = f(self).and_then(|r| self.batch("COMMIT").map(|()| r));
            match result {
                Ok(r) => return Ok(r),
                Err(e) => {
                    // A failed COMMIT has ended the transaction already;
                    // ROLLBACK then only warns.
                    let _ = self.batch("ROLLBACK");
                    let retry = e
                        .chain()
                        .any(|c| c.downcast_ref::<PgError>().is_some_and(|p| p.retry));
                    if !retry || attempt >= attempts {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(5 << attempt.min(6)));
                }
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        // The client's own drop blocks on its runtime: not on a runtime
        // thread.
        if let Inner::Pg { client, .. } = &mut self.inner {
            let c = client.get_mut().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(c) = c {
                off_runtime(move || drop(c));
            }
        }
    }
}

/// SQLite DDL in PostgreSQL's types: 64-bit integers and bytes.
fn pg_ddl(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "INTEGER" => "BIGINT",
            "BLOB" => "BYTEA",
            w => w,
        });
        word.clear();
    };
    for c in sql.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// TLS to the database, as libpq's `sslmode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    /// TLS if the server offers it; the certificate is verified when a
    /// root certificate is given (libpq's `prefer`).
    Prefer,
    /// TLS; the certificate is verified when a root certificate is given.
    Require,
    /// TLS; the certificate chain is verified against `sslrootcert`.
    VerifyCa,
    /// TLS; the chain and the host name are verified.
    VerifyFull,
}

/// A parsed registry URL: the client's configuration plus what renkei
/// handles itself (libpq's `sslmode` verify modes, `sslrootcert`,
/// `passfile`), which the `postgres` crate does not know.
struct PgTarget {
    config: postgres::Config,
    ssl: SslMode,
    root_cert: Option<PathBuf>,
    /// Whether `root_cert` was named (not libpq's default file).
    root_named: bool,
    /// Whether the URL itself holds a password (not a passfile).
    password_in_url: bool,
}

impl PgTarget {
    fn parse(url: &str) -> Result<PgTarget> {
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            bail!("{}", t!("registry_db.not_a_url", url = redact(url)));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        let mut passfile = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v_dec = percent_decode(v);
            match k {
                "sslmode" => {
                    ssl = match v_dec.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => bail!("{}", t!("registry_db.bad_sslmode", value = other)),
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(v_dec)),
                "passfile" => passfile = Some(PathBuf::from(v_dec)),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: postgres::Config = rest.parse().map_err(|e: postgres::Error| {
            anyhow::anyhow!(
                "{}",
                t!(
                    "registry_db.bad_url",
                    url = redact(url),
                    error = e.to_string()
                )
            )
        })?;
        config.ssl_mode(match ssl {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            _ => postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_user().is_none() {
            if let Ok(user) = std::env::var("PGUSER").or_else(|_| std::env::var("USER")) {
                config.user(&user);
            } else {
                config.user("root");
            }
        }
        let password_in_url = config.get_password().is_some();
        if !password_in_url {
            let file = passfile
                .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(file) = file {
                if let Some(pw) = passfile_lookup(&file, &config)? {
                    config.password(pw);
                }
            }
        }
        let root_named = root_cert.is_some();
        let root_cert = root_cert.or_else(|| {
            std::env::var_os("PGSSLROOTCERT")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                        .filter(|p| p.exists())
                })
        });
        Ok(PgTarget {
            config,
            ssl,
            root_cert,
            root_named,
            password_in_url,
        })
    }

    /// host:port/database as user.
    fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            self.config
                .get_dbname()
                .or(self.config.get_user())
                .unwrap_or("?"),
            self.config.get_user().unwrap_or("?")
        )
    }

    fn connect(&self) -> Result<postgres::Client> {
        let target = self.describe();
        let connected = if self.ssl == SslMode::Disable {
            self.config.connect(postgres::NoTls)
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
            self.config.connect(tls)
        };
        connected.map_err(|e| match e.as_db_error() {
            Some(db) => anyhow::anyhow!(
                "{}",
                t!(
                    "registry_db.refused",
                    target = target,
                    message = db.message()
                )
            ),
            None if e.to_string().contains("TLS") => anyhow::anyhow!(
                "{}",
                t!(
                    "registry_db.tls_failed",
                    target = target,
                    error = with_causes(&e)
                )
            ),
            None => outage(&target, &with_causes(&e)),
        })
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("registry: TLS")?;
        let verify = match self.ssl {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            // libpq: with a root certificate, require and prefer verify
            // the chain as verify-ca does.
            _ => self.root_cert.is_some() && (self.root_named || self.ssl != SslMode::Disable),
        };
        let config = if verify {
            let path = self
                .root_cert
                .as_ref()
                .with_context(|| t!("registry_db.no_root_cert").into_owned())?;
            let mut roots = rustls::RootCertStore::empty();
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .with_context(|| format!("registry: sslrootcert {}", path.display()))?
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("registry: sslrootcert {}", path.display()))?;
            if certs.is_empty() {
                bail!(
                    "{}",
                    t!(
                        "registry_db.empty_root_cert",
                        path = path.display().to_string()
                    )
                );
            }
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("registry: sslrootcert {}", path.display()))?;
            }
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .context("registry: TLS")?;
            let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
                if self.ssl == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth()
        };
        Ok(config)
    }
}

/// `verify-ca`: the chain to `sslrootcert` is verified, the name is not.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

/// `require` without a root certificate (libpq's meaning): encrypted, the
/// server's certificate not verified; the handshake's signatures still are.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The URL with any password replaced by `***`, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(auth_end);
    let auth = match auth.rsplit_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => auth.to_string(),
        },
        None => auth.to_string(),
    };
    let tail = tail
        .split('&')
        .map(|p| {
            if p.starts_with("password=") || p.contains("?password=") {
                let (k, _) = p.split_once('=').unwrap_or((p, ""));
                format!("{k}=***")
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{auth}{tail}")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The password for `config` in a libpq passfile
/// (`hostname:port:database:username:password`, `*` matching anything,
/// `\:` and `\\` escaped; a Unix-socket connection's host matches its
/// directory or `localhost`). Like libpq, a file others may read is
/// ignored, with a warning.
fn passfile_lookup(file: &Path, config: &postgres::Config) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        eprintln!(
            "renkei: {}",
            t!(
                "registry_db.passfile_open",
                path = file.display().to_string()
            )
        );
        return Ok(None);
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("registry: reading the password file {}", file.display()))?;
    let (host, local) = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => (h.clone(), false),
        Some(postgres::config::Host::Unix(p)) => (p.display().to_string(), true),
        None => ("localhost".into(), true),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("").to_string();
    let db = config.get_dbname().unwrap_or(&user).to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        fields.push(cur);
        if fields.len() != 5 {
            continue;
        }
        let m = |f: &str, v: &str| f == "*" || f == v;
        let host_ok = m(&fields[0], &host) || (local && fields[0] == "localhost");
        if host_ok && m(&fields[1], &port) && m(&fields[2], &db) && m(&fields[3], &user) {
            return Ok(Some(fields[4].clone()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_types_are_translated_for_postgresql() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
        assert_eq!(
            pg_ddl("CREATE TABLE t (a INTEGER NOT NULL, b BLOB, c TEXT, d_INTEGER INTEGER)"),
            "CREATE TABLE t (a BIGINT NOT NULL, b BYTEA, c TEXT, d_INTEGER BIGINT)"
        );
    }

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        assert!(check_url("sqlite:///x").is_err());
        let e = check_url("postgresql://u@h/db?sslmode=maybe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sslmode 'maybe'"), "{e}");
        assert!(url_has_password("postgresql://u:secret@h/db").unwrap());
        assert!(
            !url_has_password("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/x").unwrap()
        );
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db?sslmode=require"),
            "postgresql://u:***@h:5432/db?sslmode=require"
        );
        assert_eq!(
            redact("postgresql://h/db?user=u&password=secret"),
            "postgresql://h/db?user=u&password=***"
        );
        let t = PgTarget::parse(
            "postgresql://reg@db.example:5433/renkei?sslmode=verify-full&sslrootcert=/r.pem",
        )
        .unwrap();
        assert_eq!(t.describe(), "db.example:5433/renkei as reg");
        assert_eq!(t.ssl, SslMode::VerifyFull);
    }

    #[test]
    fn a_passfile_is_read_as_libpq_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("renkei-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pgpass");
        std::fs::write(
            &f,
            "# comment\nother:*:*:*:no\ndb.example:5433:renkei:reg:pa\\:ss\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg: postgres::Config = "postgresql://reg@db.example:5433/renkei".parse().unwrap();
        assert_eq!(passfile_lookup(&f, &cfg).unwrap().as_deref(), Some("pa:ss"));
        let cfg: postgres::Config = "postgresql://reg@db.example:5432/renkei".parse().unwrap();
        assert_eq!(
            passfile_lookup(&f, &cfg).unwrap().as_deref(),
            Some("fallback")
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            passfile_lookup(&f, &cfg).unwrap(),
            None,
            "readable by others: ignored"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
