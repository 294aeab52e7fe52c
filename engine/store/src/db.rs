//! The SQL facade the stores are written against, over either backend.
//!
//! This module owns [`Tx`] (one open transaction on SQLite or PostgreSQL),
//! [`Row`], the parameter value type [`Value`], the translation of the
//! stores' SQL text to PostgreSQL's placeholders (`?1` → `$1`), and how a
//! PostgreSQL client runs and closes off the daemon's async runtime
//! ([`off_runtime`], [`PgClient`]). It mirrors
//! the small part of rusqlite's API the stores use (`execute`, `query_row`,
//! `prepare_cached(..).query_map`, `optional`), so each store's SQL and logic
//! is written once. It must not decide anything, open connections or begin
//! and end transactions on its own: [`crate::Store`] does that and hands a
//! `Tx` to the store code. Where the two dialects differ (a scalar `max`
//! against `GREATEST`), the store code asks [`Tx::dialect`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};

/// Locks a connection. A panic while it was held dropped its transaction
/// (which rolls it back), so the connection is safe to use again.
pub(crate) fn lock<C>(connection: &Mutex<C>) -> MutexGuard<'_, C> {
    connection.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A free reader if there is one, else the next one in turn (or the writer
/// when there are no readers). Both backends keep their connections so.
pub(crate) fn reader<'a, C>(
    readers: &'a [Mutex<C>],
    writer: &'a Mutex<C>,
    next_reader: &AtomicUsize,
) -> MutexGuard<'a, C> {
    for reader in readers {
        if let Ok(guard) = reader.try_lock() {
            return guard;
        }
    }
    let turn = next_reader.fetch_add(1, Ordering::Relaxed);
    match readers.get(turn.checked_rem(readers.len()).unwrap_or(0)) {
        Some(reader) => lock(reader),
        None => lock(writer),
    }
}

/// Which SQL dialect a [`Tx`] speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// An error from either database client.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Not a `source`: the message already carries the client's cause, and
    /// a chain printer (`{:#}`) would repeat it.
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    #[error("query returned no rows")]
    NoRows,
    #[error("column {column}: stored integer {value} is out of range")]
    OutOfRange { column: usize, value: i64 },
}

/// PostgreSQL's own message (with its detail) rather than the client's
/// terse "db error".
pub(crate) fn pg_message(err: &postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{}: {} ({detail})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        // The client's `Display` ends with its cause for most errors, not
        // for a failed TLS handshake: the causes not yet in it are added.
        None => neutral_core::error_text::with_causes(err),
    }
}

impl From<postgres::Error> for DbError {
    fn from(err: postgres::Error) -> Self {
        DbError::Postgres(err)
    }
}

pub(crate) type DbResult<T> = std::result::Result<T, DbError>;

/// `Ok(None)` for a query that found no row, as rusqlite's
/// `OptionalExtension`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> DbResult<Option<T>>;
}

impl<T> OptionalExtension<T> for DbResult<T> {
    fn optional(self) -> DbResult<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(DbError::NoRows) => Ok(None),
            Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// A parameter, owned, in the few types the schema uses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// Anything the stores bind as a parameter.
pub(crate) trait Param {
    fn value(&self) -> Value;
}

impl Param for i64 {
    fn value(&self) -> Value {
        Value::Int(*self)
    }
}
impl Param for i32 {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl Param for u64 {
    fn value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Param for u32 {
    fn value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl Param for usize {
    fn value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl Param for f64 {
    fn value(&self) -> Value {
        Value::Real(*self)
    }
}
impl Param for bool {
    fn value(&self) -> Value {
        Value::Bool(*self)
    }
}
impl Param for str {
    fn value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}
impl Param for String {
    fn value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl Param for [u8] {
    fn value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl Param for Vec<u8> {
    fn value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl Param for Value {
    fn value(&self) -> Value {
        self.clone()
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value {
        match self {
            Some(inner) => inner.value(),
            None => Value::Null,
        }
    }
}

/// `count` rows of a `VALUES` list for one set-based statement, each of
/// `types.len()` placeholders numbered from `?first` on, every one cast to
/// its type: PostgreSQL types an untyped placeholder in `VALUES` as text.
/// A statement built once for `count` rows, padded with rows of NULLs when
/// fewer are sent, is prepared once.
pub(crate) fn typed_values_rows(types: &[&str], first: usize, count: usize) -> String {
    let width = types.len();
    (0..count)
        .map(|row| {
            let cells: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(cell, ty)| format!("CAST(?{} AS {ty})", first + row * width + cell))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `params![a, b]`: the parameters of one statement, as rusqlite's macro.
macro_rules! params {
    () => { &[] as &[&dyn $crate::db::Param] };
    ($($param:expr),+ $(,)?) => {
        &[$(&$param as &dyn $crate::db::Param),+] as &[&dyn $crate::db::Param]
    };
}
pub(crate) use params;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(v) => return rusqlite::ToSql::to_sql(v),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Blob(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

impl PgToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql_checked(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql_checked(ty, out),
                _ => v.to_sql_checked(ty, out),
            },
            Value::Real(v) => v.to_sql_checked(ty, out),
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::Blob(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column value the stores read, from either backend.
pub(crate) trait FromCol: Sized {
    fn from_sqlite(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Self>;
    fn from_pg(row: &postgres::Row, idx: usize) -> DbResult<Self>;
}

/// Types both clients read as they are.
macro_rules! from_col_direct {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Self> {
                row.get(idx)
            }
            fn from_pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                Ok(row.try_get(idx)?)
            }
        }
        impl FromCol for Option<$t> {
            fn from_sqlite(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Self> {
                row.get(idx)
            }
            fn from_pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                Ok(row.try_get(idx)?)
            }
        }
    )*};
}
from_col_direct!(i64, f64, bool, String, Vec<u8>);

/// Narrower integers: PostgreSQL stores every integer as `BIGINT`, read as
/// `i64` and narrowed (a value out of range is a conversion error).
macro_rules! from_col_narrow {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Self> {
                row.get(idx)
            }
            fn from_pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                let wide: i64 = row.try_get(idx)?;
                <$t>::try_from(wide).map_err(|_| DbError::OutOfRange { column: idx, value: wide })
            }
        }
        impl FromCol for Option<$t> {
            fn from_sqlite(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Self> {
                row.get(idx)
            }
            fn from_pg(row: &postgres::Row, idx: usize) -> DbResult<Self> {
                let wide: Option<i64> = row.try_get(idx)?;
                wide.map(|wide| {
                    <$t>::try_from(wide).map_err(|_| DbError::OutOfRange { column: idx, value: wide })
                })
                .transpose()
            }
        }
    )*};
}
from_col_narrow!(i32, u32);

/// A column position (0-based), as rusqlite's `RowIndex`.
pub(crate) trait ColIndex {
    fn index(self) -> usize;
}

impl ColIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row of either backend.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `idx` (0-based). The `_` type parameter keeps rusqlite's
    /// `row.get::<_, T>(i)` spelling.
    pub(crate) fn get<I: ColIndex, T: FromCol>(&self, idx: I) -> DbResult<T> {
        let idx = idx.index();
        match self {
            Row::Sqlite(row) => Ok(T::from_sqlite(row, idx)?),
            Row::Postgres(row) => T::from_pg(row, idx),
        }
    }
}

/// A PostgreSQL connection with its prepared statements, keyed by the
/// stores' SQL text.
pub(crate) struct PgConn {
    pub(crate) client: PgClient,
    pub(crate) statements: HashMap<String, postgres::Statement>,
}

pub(crate) struct PgTx<'a> {
    tx: postgres::Transaction<'a>,
    statements: &'a mut HashMap<String, postgres::Statement>,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(&to_postgres(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// One open transaction. Dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(RefCell<PgTx<'a>>),
}

impl<'a> Tx<'a> {
    pub(crate) fn postgres(
        tx: postgres::Transaction<'a>,
        statements: &'a mut HashMap<String, postgres::Statement>,
    ) -> Tx<'a> {
        Tx::Postgres(RefCell::new(PgTx { tx, statements }))
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) fn commit(self) -> DbResult<()> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.commit()?),
            Tx::Postgres(tx) => Ok(tx.into_inner().tx.commit()?),
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[&dyn Param]) -> DbResult<usize> {
        let values: Vec<Value> = params.iter().map(|p| Param::value(*p)).collect();
        match self {
            Tx::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            Tx::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let statement = pg.statement(sql)?;
                let refs = pg_refs(&values);
                let changed = pg.tx.execute(&statement, &refs)?;
                Ok(usize::try_from(changed).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs several statements without parameters.
    #[cfg(test)]
    pub(crate) fn execute_batch(&self, sql: &str) -> DbResult<()> {
        match self {
            Tx::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            Tx::Postgres(cell) => Ok(cell.borrow_mut().tx.batch_execute(sql)?),
        }
    }

    /// Every row of a query, each through `f`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        let values: Vec<Value> = params.iter().map(|p| Param::value(*p)).collect();
        let mut out = Vec::new();
        match self {
            Tx::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                while let Some(row) = rows.next()? {
                    out.push(f(&Row::Sqlite(row)));
                }
            }
            Tx::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let statement = pg.statement(sql)?;
                let refs = pg_refs(&values);
                for row in pg.tx.query(&statement, &refs)? {
                    out.push(f(&Row::Postgres(&row)));
                }
            }
        }
        Ok(out.into_iter())
    }

    /// The first row of a query through `f`; [`DbError::NoRows`] when there
    /// is none (see [`OptionalExtension::optional`]).
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        let values: Vec<Value> = params.iter().map(|p| Param::value(*p)).collect();
        match self {
            Tx::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
                match rows.next()? {
                    Some(row) => f(&Row::Sqlite(row)),
                    None => Err(DbError::NoRows),
                }
            }
            Tx::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let statement = pg.statement(sql)?;
                let refs = pg_refs(&values);
                match pg.tx.query(&statement, &refs)?.first() {
                    Some(row) => f(&Row::Postgres(row)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// Rusqlite's spelling: statements are cached per connection anyway.
    pub(crate) fn prepare_cached<'t>(&'t self, sql: &str) -> DbResult<Stmt<'t, 'a>> {
        Ok(Stmt {
            tx: self,
            sql: sql.to_owned(),
        })
    }
}

/// A statement of a [`Tx`], as rusqlite's `CachedStatement`.
pub(crate) struct Stmt<'t, 'a> {
    tx: &'t Tx<'a>,
    sql: String,
}

impl Stmt<'_, '_> {
    pub(crate) fn execute(&mut self, params: &[&dyn Param]) -> DbResult<usize> {
        self.tx.execute(&self.sql, params)
    }

    pub(crate) fn query_row<T>(
        &mut self,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        self.tx.query_row(&self.sql, params, f)
    }

    pub(crate) fn query_map<T>(
        &mut self,
        params: &[&dyn Param],
        f: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<std::vec::IntoIter<DbResult<T>>> {
        self.tx.query_map(&self.sql, params, f)
    }
}

fn pg_refs(values: &[Value]) -> Vec<&(dyn PgToSql + Sync)> {
    values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
}

/// The stores' SQL with SQLite's numbered placeholders (`?1`) turned into
/// PostgreSQL's (`$1`); text inside quotes is left alone.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '?' if chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
                _ => out.push(c),
            },
        }
    }
    out
}

/// Runs `op` on a scoped thread of its own. The `postgres` client drives
/// each call with a small runtime of its own, which cannot start on a
/// thread that is already inside a tokio runtime (the daemon calls some
/// store methods straight from async tasks); a fresh thread is outside any.
/// A panic in `op` goes on in the caller.
pub(crate) fn off_runtime<T: Send>(op: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(op)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A `postgres::Client` that is closed on a thread of its own when dropped.
/// Closing drives the client's own small runtime, which panics on a thread
/// inside a tokio runtime — where the daemon drops its last handle to the
/// store when it stops.
pub(crate) struct PgClient(pub(crate) Option<postgres::Client>);

impl std::ops::Deref for PgClient {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        match &self.0 {
            Some(client) => client,
            None => unreachable!("only dropping takes the client"),
        }
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        match &mut self.0 {
            Some(client) => client,
            None => unreachable!("only dropping takes the client"),
        }
    }
}

impl Drop for PgClient {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn placeholders_become_dollars_outside_quotes_only() {
        assert_eq!(
            to_postgres("SELECT ?1, '?2', \"?3\" FROM t WHERE a = ?12 AND b ? c"),
            "SELECT $1, '?2', \"?3\" FROM t WHERE a = $12 AND b ? c"
        );
    }
}
