//! Writing and reading many rows with few statements, the same SQL on both backends.
//!
//! [`Rows`] writes a table's rows as multi-row `INSERT … VALUES (…), (…)` statements
//! and [`fetch_in`] reads rows by a list of keys with `… IN (…)`. Both cut their input
//! into chunks of fixed sizes (64, 16, 4 and 1 rows), so a table has at most four
//! statement shapes for the backends to keep prepared, whatever the batch's size.

use chrono::{DateTime, Utc};
use sqlx::Arguments;
use uuid::Uuid;

use super::hook::Tx;
use crate::error::StoreError;

/// The chunk sizes, largest first.
const CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// One value bound to a placeholder, of either backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Uuid(Uuid),
    Text(String),
    Time(DateTime<Utc>),
    I64(i64),
    I32(i32),
    Bool(bool),
    Bytes(Vec<u8>),
    /// A typed `NULL` (PostgreSQL checks the type of every parameter).
    Null(NullOf),
}

/// The type of a [`Bind::Null`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullOf {
    Uuid,
    Text,
    Time,
    I64,
}

impl From<Uuid> for Bind {
    fn from(v: Uuid) -> Self {
        Bind::Uuid(v)
    }
}
impl From<String> for Bind {
    fn from(v: String) -> Self {
        Bind::Text(v)
    }
}
impl From<&str> for Bind {
    fn from(v: &str) -> Self {
        Bind::Text(v.to_owned())
    }
}
impl From<DateTime<Utc>> for Bind {
    fn from(v: DateTime<Utc>) -> Self {
        Bind::Time(v)
    }
}
impl From<i64> for Bind {
    fn from(v: i64) -> Self {
        Bind::I64(v)
    }
}
impl From<i32> for Bind {
    fn from(v: i32) -> Self {
        Bind::I32(v)
    }
}
impl From<bool> for Bind {
    fn from(v: bool) -> Self {
        Bind::Bool(v)
    }
}
impl From<Vec<u8>> for Bind {
    fn from(v: Vec<u8>) -> Self {
        Bind::Bytes(v)
    }
}
impl From<Option<Uuid>> for Bind {
    fn from(v: Option<Uuid>) -> Self {
        v.map_or(Bind::Null(NullOf::Uuid), Bind::Uuid)
    }
}
impl From<Option<String>> for Bind {
    fn from(v: Option<String>) -> Self {
        v.map_or(Bind::Null(NullOf::Text), Bind::Text)
    }
}
impl From<Option<&str>> for Bind {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Bind::Null(NullOf::Text), Bind::from)
    }
}
impl From<Option<DateTime<Utc>>> for Bind {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        v.map_or(Bind::Null(NullOf::Time), Bind::Time)
    }
}
impl From<Option<i64>> for Bind {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Bind::Null(NullOf::I64), Bind::I64)
    }
}

/// A backend that can bind every [`Bind`].
pub trait Backend: sqlx::Database {
    /// Adds `bind` to an argument list.
    ///
    /// # Errors
    /// A value the backend cannot encode.
    fn add_bind(
        args: &mut Self::Arguments<'_>,
        bind: &Bind,
    ) -> Result<(), sqlx::error::BoxDynError>;
}

macro_rules! backend {
    ($db:ty) => {
        impl Backend for $db {
            fn add_bind(
                args: &mut Self::Arguments<'_>,
                bind: &Bind,
            ) -> Result<(), sqlx::error::BoxDynError> {
                match bind {
                    Bind::Uuid(v) => args.add(*v),
                    Bind::Text(v) => args.add(v.clone()),
                    Bind::Time(v) => args.add(*v),
                    Bind::I64(v) => args.add(*v),
                    Bind::I32(v) => args.add(*v),
                    Bind::Bool(v) => args.add(*v),
                    Bind::Bytes(v) => args.add(v.clone()),
                    Bind::Null(NullOf::Uuid) => args.add(None::<Uuid>),
                    Bind::Null(NullOf::Text) => args.add(None::<String>),
                    Bind::Null(NullOf::Time) => args.add(None::<DateTime<Utc>>),
                    Bind::Null(NullOf::I64) => args.add(None::<i64>),
                }
            }
        }
    };
}
backend!(sqlx::Sqlite);
backend!(sqlx::Postgres);

/// Builds a backend's argument list.
///
/// # Errors
/// A value the backend cannot encode.
pub fn arguments<'q, DB: Backend>(binds: &[Bind]) -> Result<DB::Arguments<'q>, StoreError> {
    let mut args = DB::Arguments::default();
    for bind in binds {
        DB::add_bind(&mut args, bind).map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
    }
    Ok(args)
}

/// `n` groups of `width` placeholders: numbered from 1 for PostgreSQL, `($1, $2),
/// ($3, $4)`; plain `(?, ?), (?, ?)` for SQLite, where looking up a numbered
/// parameter's name costs time in proportion to the number of parameters.
fn placeholders(numbered: bool, n: usize, width: usize) -> String {
    let mut text = String::with_capacity(n * width * 5);
    for row in 0..n {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..width {
            if column > 0 {
                text.push_str(", ");
            }
            if numbered {
                text.push('$');
                text.push_str(&(row * width + column + 1).to_string());
            } else {
                text.push('?');
            }
        }
        text.push(')');
    }
    text
}

/// Cuts `len` items into runs of the chunk sizes: `(start, size)`.
fn chunks(len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = len - start;
        let size = CHUNKS.into_iter().find(|size| *size <= left)?;
        let chunk = (start, size);
        start += size;
        Some(chunk)
    })
}

/// Rows for one table, written with few multi-row statements.
#[derive(Debug)]
pub struct Rows {
    /// `INSERT INTO table (a, b, c)`.
    head: &'static str,
    /// What follows the values: `ON CONFLICT …` or nothing.
    tail: &'static str,
    width: usize,
    values: Vec<Bind>,
}

impl Rows {
    /// Rows for `head` (`INSERT INTO t (a, b)`) of `width` columns, followed by
    /// `tail` (an `ON CONFLICT` clause, or `""`).
    #[must_use]
    pub fn new(head: &'static str, width: usize, tail: &'static str) -> Self {
        Self {
            head,
            tail,
            width,
            values: Vec::new(),
        }
    }

    /// Adds a row of exactly `width` values.
    ///
    /// # Panics
    /// Never in release builds; a debug assertion checks the row's width.
    pub fn push<const N: usize>(&mut self, row: [Bind; N]) {
        debug_assert_eq!(N, self.width, "a row of {} has {N} values", self.head);
        self.values.extend(row);
    }

    /// How many rows are waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.len() / self.width
    }

    /// Whether no row is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Writes the rows, in the order they were added.
    ///
    /// # Errors
    /// Store failures.
    pub async fn write(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        for (start, size) in chunks(self.len()) {
            let sql = format!(
                "{} VALUES {} {}",
                self.head,
                placeholders(matches!(tx, Tx::Postgres(_)), size, self.width),
                self.tail
            );
            let from = start * self.width;
            execute(tx, &sql, &self.values[from..from + size * self.width]).await?;
        }
        Ok(())
    }
}

/// Reads the rows whose key is one of `keys`, each key `width` values wide:
/// `select` ends with `… IN` (`WHERE id IN`, `WHERE (a, b) IN`) and gets the list
/// appended. Give each key once.
///
/// # Errors
/// Store failures.
pub async fn fetch_in<T>(
    tx: &mut Tx<'_>,
    select: &str,
    width: usize,
    keys: &[Bind],
) -> Result<Vec<T>, StoreError>
where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
{
    let numbered = matches!(tx, Tx::Postgres(_));
    let mut rows = Vec::new();
    for (start, size) in chunks(keys.len() / width) {
        let list = if width == 1 {
            placeholders(numbered, 1, size)
        } else {
            format!("({})", placeholders(numbered, size, width))
        };
        let sql = format!("{select} {list}");
        let keys = &keys[start * width..(start + size) * width];
        match tx {
            Tx::Sqlite(conn) => {
                let args = arguments::<sqlx::Sqlite>(keys)?;
                rows.extend(
                    sqlx::query_as_with::<_, T, _>(&sql, args)
                        .fetch_all(&mut **conn)
                        .await?,
                );
            }
            Tx::Postgres(conn) => {
                let args = arguments::<sqlx::Postgres>(keys)?;
                rows.extend(
                    sqlx::query_as_with::<_, T, _>(&sql, args)
                        .fetch_all(&mut **conn)
                        .await?,
                );
            }
        }
    }
    Ok(rows)
}

/// Runs one statement with its binds on a transaction.
///
/// # Errors
/// Store failures.
pub async fn execute(tx: &mut Tx<'_>, sql: &str, binds: &[Bind]) -> Result<(), StoreError> {
    match tx {
        Tx::Sqlite(conn) => {
            let args = arguments::<sqlx::Sqlite>(binds)?;
            sqlx::query_with(sql, args).execute(&mut **conn).await?;
        }
        Tx::Postgres(conn) => {
            let args = arguments::<sqlx::Postgres>(binds)?;
            sqlx::query_with(sql, args).execute(&mut **conn).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once_with_few_shapes() {
        for len in 0..300 {
            let runs: Vec<_> = chunks(len).collect();
            assert_eq!(runs.iter().map(|(_, size)| size).sum::<usize>(), len);
            let mut next = 0;
            for (start, size) in &runs {
                assert_eq!(*start, next);
                assert!(CHUNKS.contains(size));
                next += size;
            }
        }
        assert_eq!(
            chunks(85).collect::<Vec<_>>(),
            [(0, 64), (64, 16), (80, 4), (84, 1)]
        );
    }

    #[test]
    fn placeholders_are_numbered_row_by_row_or_plain() {
        assert_eq!(placeholders(true, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(false, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(true, 1, 1), "($1)");
    }
}
