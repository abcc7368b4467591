//! One connection to either engine: sqlite (embedded, the default) or
//! Postgres (shared by control-plane replicas). The store's SQL is written
//! once in the subset both understand (`?N` placeholders, `ON CONFLICT`,
//! `CASE` instead of two-argument `MAX`, sums cast to `BIGINT`); this file
//! is the only place that knows which engine runs it.
//!
//! Why the blocking `postgres` client beside `rusqlite` rather than `sqlx`:
//! the store is synchronous by design (one writer behind a mutex, batches
//! written from `spawn_blocking`), so both engines keep the same call shape
//! and every store function and its test run unchanged on either; `sqlx`
//! would have made the whole store async for one engine's sake.
//!
//! The Postgres client runs on a thread of its own: `postgres::Client`
//! drives its connection with a private runtime, which must not be entered
//! from a tokio worker. Callers block on a reply, exactly as they block on
//! the sqlite mutex today.

use std::sync::mpsc;
use std::sync::Arc;

/// A database error, as text (both engines' errors end up in logs and API
/// answers).
#[derive(Debug, Clone, PartialEq)]
pub struct DbError(pub String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DbError {}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError(e.to_string())
    }
}

impl From<DbError> for String {
    fn from(e: DbError) -> Self {
        e.0
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// A value crossing the boundary, in either direction.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// What can be bound as a parameter.
pub trait Param {
    fn value(&self) -> Value;
}

impl Param for i64 {
    fn value(&self) -> Value {
        Value::Int(*self)
    }
}
impl Param for u16 {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl Param for bool {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl Param for f64 {
    fn value(&self) -> Value {
        Value::Real(*self)
    }
}
impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl Param for std::borrow::Cow<'_, str> {
    fn value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        self.as_ref().map_or(Value::Null, Param::value)
    }
}

/// Parameters for a statement: `args![a, b]`.
#[macro_export]
macro_rules! args {
    () => { &[] as &[&dyn $crate::store::Param] };
    ($($x:expr),+ $(,)?) => { &[$(&$x as &dyn $crate::store::Param),+] as &[&dyn $crate::store::Param] };
}

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> DbResult<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Int(i) => Ok(*i),
            other => Err(DbError(format!("expected an integer, got {other:?}"))),
        }
    }
}
impl FromValue for f64 {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Real(f) => Ok(*f),
            // sqlite returns a whole-number real (COALESCE(.., 0)) as integer.
            Value::Int(i) => Ok(*i as f64),
            other => Err(DbError(format!("expected a number, got {other:?}"))),
        }
    }
}
impl FromValue for bool {
    fn from_value(v: &Value) -> DbResult<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(DbError(format!("expected text, got {other:?}"))),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> DbResult<Self> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row: values by position or by column name.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn get<T: FromValue>(&self, i: usize) -> DbResult<T> {
        let v = self
            .values
            .get(i)
            .ok_or_else(|| DbError(format!("no column {i}")))?;
        T::from_value(v).map_err(|e| DbError(format!("column {i}: {e}")))
    }

    pub fn named<T: FromValue>(&self, name: &str) -> DbResult<T> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| DbError(format!("no column {name}")))?;
        self.get(i)
    }
}

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection. The store keeps it behind a mutex, so statements of one
/// transaction (`BEGIN` … `COMMIT`) never interleave with another caller's.
pub struct Db {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Pg),
}

impl Db {
    pub fn sqlite(c: rusqlite::Connection) -> Db {
        Db {
            inner: Inner::Sqlite(c),
        }
    }

    #[cfg(test)]
    pub fn postgres(url: &str) -> DbResult<Db> {
        Db::postgres_with_ca(url, None)
    }

    /// `sslmode=require` in the URL: TLS, the server's certificate checked
    /// (chain and host name) against `ca` (a PEM bundle), or the system's
    /// roots. Otherwise plain TCP.
    pub fn postgres_with_ca(url: &str, ca: Option<&std::path::Path>) -> DbResult<Db> {
        Ok(Db {
            inner: Inner::Postgres(Pg::connect(url, ca)?),
        })
    }

    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Sqlite(_) => Engine::Sqlite,
            Inner::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> DbResult<u64> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let n = c.execute(
                    sql,
                    rusqlite::params_from_iter(params.iter().map(to_sqlite)),
                )?;
                Ok(n as u64)
            }
            Inner::Postgres(p) => p.execute(sql, params),
        }
    }

    /// Every row of a query.
    pub fn query(&self, sql: &str, params: &[&dyn Param]) -> DbResult<Vec<Row>> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let names: Arc<[String]> =
                    st.column_names().iter().map(|s| s.to_string()).collect();
                let n = names.len();
                let mut rows =
                    st.query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut values = Vec::with_capacity(n);
                    for i in 0..n {
                        values.push(from_sqlite(r.get_ref(i)?));
                    }
                    out.push(Row {
                        names: names.clone(),
                        values,
                    });
                }
                Ok(out)
            }
            Inner::Postgres(p) => p.query(sql, params),
        }
    }

    /// The first row, if any.
    pub fn query_opt(&self, sql: &str, params: &[&dyn Param]) -> DbResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row; an error if there is none.
    pub fn query_one(&self, sql: &str, params: &[&dyn Param]) -> DbResult<Row> {
        self.query_opt(sql, params)?
            .ok_or_else(|| DbError("query returned no rows".into()))
    }

    /// Statements without parameters, separated by `;`.
    pub fn batch(&self, sql: &str) -> DbResult<()> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(p) => p.batch(sql.to_string()),
        }
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled
    /// back otherwise.
    pub fn transaction<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        /// Rolls back unless committed — also when `f` unwinds, so a
        /// connection is never left inside a transaction nobody ends.
        struct Open<'a>(&'a Db, bool);
        impl Drop for Open<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    let _ = self.0.batch("ROLLBACK");
                }
            }
        }
        self.batch("BEGIN")?;
        let mut open = Open(self, false);
        let v = f(self)?;
        self.batch("COMMIT")?;
        open.1 = true;
        Ok(v)
    }

    /// The sqlite connection (pragmas in tests); `None` on Postgres.
    #[cfg(test)]
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }
}

fn to_sqlite(p: &&dyn Param) -> rusqlite::types::Value {
    match p.value() {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(i),
        Value::Real(f) => rusqlite::types::Value::Real(f),
        Value::Text(s) => rusqlite::types::Value::Text(s),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into()),
    }
}

/// `?N` placeholders as Postgres writes them (`$N`), outside string
/// literals.
pub fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c == '?' && !quoted && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// A migration as Postgres needs it: sqlite's 64-bit `INTEGER` and 8-byte
/// `REAL` are `BIGINT` and `DOUBLE PRECISION` there.
pub fn pg_ddl(sql: &str) -> String {
    sql.replace(" INTEGER", " BIGINT")
        .replace(" REAL", " DOUBLE PRECISION")
}

// ---- Postgres -------------------------------------------------------------

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The client and its prepared statements: each distinct SQL text is
/// prepared once per connection, not before every execution (a ledger batch
/// runs the same two statements for every record).
struct Conn {
    client: postgres::Client,
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(st) = self.prepared.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).map_err(pg_err)?;
        self.prepared.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    /// A statement failed: prepared again next time, so one a newer
    /// replica's migration made stale (`SELECT *` of a changed table)
    /// fails once, not forever.
    fn failed(&mut self, sql: &str, e: postgres::Error) -> DbError {
        self.prepared.remove(sql);
        pg_err(e)
    }
}

/// How long a starting replica waits for its database.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The handle of the thread that owns the Postgres client.
struct Pg {
    jobs: mpsc::Sender<Job>,
}

impl Pg {
    fn connect(url: &str, ca: Option<&std::path::Path>) -> DbResult<Pg> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| DbError(format!("postgres URL: {e}")))?;
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Require => Some(tls_connector(ca)?),
            _ => None,
        };
        let open = move || match &tls {
            Some(t) => config.connect(t.clone()),
            None => config.connect(postgres::NoTls),
        };
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel::<DbResult<()>>(1);
        // Connecting happens on the client's own thread too: the blocking
        // client runs a runtime of its own, which cannot start on a thread
        // that is inside tokio (a caller in an async task, a test).
        std::thread::Builder::new()
            .name("sluice-postgres".into())
            .spawn(move || {
                // A replica may start before its database is up (Kubernetes
                // starts them together): wait for it a while rather than
                // exit at once.
                let deadline = std::time::Instant::now() + CONNECT_WAIT;
                let client = loop {
                    match open() {
                        Ok(c) => break c,
                        Err(e) if std::time::Instant::now() >= deadline || !worth_waiting(&e) => {
                            let _ = ready_tx
                                .send(Err(DbError(format!("postgres: {}", error_chain(&e)))));
                            return;
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let mut conn = Conn {
                    client,
                    prepared: Default::default(),
                };
                while let Ok(job) = rx.recv() {
                    // A server restart closes the connection: the next
                    // statement reconnects rather than failing forever.
                    if conn.client.is_closed() {
                        if let Ok(c) = open() {
                            // Statements belong to the connection they
                            // were prepared on.
                            conn = Conn {
                                client: c,
                                prepared: Default::default(),
                            };
                        }
                    }
                    job(&mut conn);
                }
            })
            .map_err(|e| DbError(e.to_string()))?;
        ready
            .recv()
            .map_err(|_| DbError("postgres thread stopped".into()))??;
        Ok(Pg { jobs })
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> DbResult<T> + Send + 'static,
    ) -> DbResult<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| DbError("postgres thread stopped".into()))?;
        rx.recv()
            .map_err(|_| DbError("postgres thread stopped".into()))?
    }

    fn execute(&self, sql: &str, params: &[&dyn Param]) -> DbResult<u64> {
        let (sql, values) = (pg_placeholders(sql), values(params));
        self.run(move |c| {
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                values.iter().map(|v| v as _).collect();
            let st = c.statement(&sql)?;
            c.client.execute(&st, &refs).map_err(|e| c.failed(&sql, e))
        })
    }

    fn query(&self, sql: &str, params: &[&dyn Param]) -> DbResult<Vec<Row>> {
        let (sql, values) = (pg_placeholders(sql), values(params));
        self.run(move |c| {
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                values.iter().map(|v| v as _).collect();
            let st = c.statement(&sql)?;
            let rows = c.client.query(&st, &refs).map_err(|e| c.failed(&sql, e))?;
            let Some(first) = rows.first() else {
                return Ok(Vec::new());
            };
            let names: Arc<[String]> = first
                .columns()
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            rows.iter()
                .map(|r| {
                    let values = (0..r.len())
                        .map(|i| from_pg(r, i))
                        .collect::<DbResult<Vec<_>>>()?;
                    Ok(Row {
                        names: names.clone(),
                        values,
                    })
                })
                .collect()
        })
    }

    fn batch(&self, sql: String) -> DbResult<()> {
        self.run(move |c| c.client.batch_execute(&sql).map_err(pg_err))
    }
}

/// A rustls connector trusting `ca` (PEM) or the system's bundle.
fn tls_connector(
    ca: Option<&std::path::Path>,
) -> DbResult<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let path = ca.unwrap_or(std::path::Path::new(SYSTEM_CAS));
    let err = |e: &dyn std::fmt::Display| DbError(format!("postgres CA {}: {e}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| err(&e))? {
        roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(&e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Whether a failed connection may succeed by waiting: the server not up
/// yet, or starting. A refused certificate or login will not.
fn worth_waiting(e: &postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return *db.code() == postgres::error::SqlState::CANNOT_CONNECT_NOW;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        let tls = c.is::<rustls::Error>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<rustls::Error>());
        if tls {
            return false;
        }
        cur = c.source();
    }
    true
}

/// Debian's (and the control-plane image's) CA bundle.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An error with its causes (a TLS failure says why, not only "error
/// performing TLS handshake").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn pg_err(e: postgres::Error) -> DbError {
    // The server's message and detail (the Display of a DbError alone says
    // only "db error").
    match e.as_db_error() {
        Some(d) => DbError(format!("postgres: {}", d.message())),
        None => DbError(format!("postgres: {e}")),
    }
}

fn values(params: &[&dyn Param]) -> Vec<Value> {
    params.iter().map(|p| p.value()).collect()
}

fn from_pg(r: &postgres::Row, i: usize) -> DbResult<Value> {
    use postgres::types::Type;
    let err = |e: postgres::Error| DbError(format!("column {i}: {e}"));
    let ty = r.columns().get(i).map(|c| c.type_().clone());
    Ok(match ty {
        Some(Type::INT8) => r.try_get::<_, Option<i64>>(i).map_err(err)?.map(Value::Int),
        Some(Type::INT4) => r
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Some(Type::INT2) => r
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Some(Type::BOOL) => r
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Some(Type::FLOAT8) => r
            .try_get::<_, Option<f64>>(i)
            .map_err(err)?
            .map(Value::Real),
        Some(Type::FLOAT4) => r
            .try_get::<_, Option<f32>>(i)
            .map_err(err)?
            .map(|v| Value::Real(v.into())),
        _ => r
            .try_get::<_, Option<String>>(i)
            .map_err(err)?
            .map(Value::Text),
    }
    .unwrap_or(Value::Null))
}

/// A parameter takes the type Postgres inferred for its place (an `INT4`
/// column gets an `i32`, a `DOUBLE PRECISION` one an `f64`).
impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => f.to_string().to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_types_for_postgres() {
        assert_eq!(
            pg_placeholders("SELECT '?1', x FROM t WHERE a = ?1 AND b = ?12"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b = $12"
        );
        assert_eq!(
            pg_ddl("CREATE TABLE t (a INTEGER NOT NULL, b REAL, c TEXT)"),
            "CREATE TABLE t (a BIGINT NOT NULL, b DOUBLE PRECISION, c TEXT)"
        );
    }

    /// Statements are prepared once per connection; one that a schema
    /// change made stale is prepared again after it fails, not kept.
    #[test]
    fn postgres_statements_are_reused_and_a_stale_one_recovers() {
        let Some(url) = crate::store::testing::postgres_for_test() else {
            return;
        };
        let db = Db::postgres(&url).unwrap();
        db.batch("CREATE TABLE t (a BIGINT)").unwrap();
        db.execute("INSERT INTO t VALUES (?1)", args![1i64])
            .unwrap();
        db.execute("INSERT INTO t VALUES (?1)", args![2i64])
            .unwrap();
        let all = || db.query("SELECT * FROM t ORDER BY a", args![]);
        assert_eq!(all().unwrap().len(), 2);
        // Another replica's migration changes the table under the cache.
        db.batch("ALTER TABLE t ADD COLUMN b TEXT").unwrap();
        let after: Vec<_> = (0..2).map(|_| all()).collect();
        let ok = after.last().unwrap().as_ref().unwrap();
        assert_eq!(ok[0].named::<Option<String>>("b").unwrap(), None);
    }

    #[test]
    fn sqlite_rows_read_by_position_and_name() {
        let db = Db::sqlite(rusqlite::Connection::open_in_memory().unwrap());
        db.batch("CREATE TABLE t (a INTEGER, b REAL, c TEXT)")
            .unwrap();
        let none: Option<String> = None;
        assert_eq!(
            db.execute("INSERT INTO t VALUES (?1, ?2, ?3)", args![7i64, 0.5, none])
                .unwrap(),
            1
        );
        let r = db.query_one("SELECT a, b, c FROM t", args![]).unwrap();
        assert_eq!(r.get::<i64>(0).unwrap(), 7);
        assert_eq!(r.named::<f64>("b").unwrap(), 0.5);
        assert_eq!(r.named::<Option<String>>("c").unwrap(), None);
        assert!(r.get::<String>(0).is_err());
        // A failed transaction leaves nothing behind.
        let failed: Result<(), DbError> = db.transaction(|tx| {
            tx.execute("DELETE FROM t", args![])?;
            Err(DbError("no".into()))
        });
        assert!(failed.is_err());
        assert_eq!(
            db.query_one("SELECT COUNT(*) FROM t", args![])
                .unwrap()
                .get::<i64>(0)
                .unwrap(),
            1
        );
    }
}
