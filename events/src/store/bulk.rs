//! Writing and reading many rows with few statements, the same SQL on both backends.
//!
//! [`Rows`] writes a table's rows as multi-row `INSERT … VALUES (…), (…)` statements
//! and [`fetch_in`] reads rows by a list of keys with `… IN (…)`. Both cut their input
//! into chunks of powers of two up to 64 rows, so a table has at most seven statement
//! shapes for the backends to keep prepared, whatever the batch's size, and a batch
//! of `n` rows takes at most `n / 64 + 6` statements.

pub use super::bind::{arguments, Backend, Bind, NullOf};
use super::tx::{Conn, Script, Tx};
use crate::error::StoreError;

/// The chunk sizes, largest first.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

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

/// Keys read with `… IN ($first, …)` on a pool rather than in a transaction: cut
/// into lists of at most 256, each padded with its last key up to a power of two
/// (a key twice in an `IN` list matches its rows once), so that a query has at
/// most nine shapes to keep prepared.
pub(crate) fn key_lists<T: Clone>(keys: &[T]) -> impl Iterator<Item = Vec<T>> + '_ {
    keys.chunks(256).map(|chunk| {
        let mut padded = chunk.to_vec();
        let size = chunk.len().next_power_of_two();
        while padded.len() < size {
            padded.push(chunk[chunk.len() - 1].clone());
        }
        padded
    })
}

/// `$first, $first + 1, …`: `n` numbered parameters, for an `IN` list.
pub(crate) fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    pub fn push(&mut self, row: impl IntoIterator<Item = Bind>) {
        let before = self.values.len();
        self.values.extend(row);
        debug_assert_eq!(
            self.values.len() - before,
            self.width,
            "a row of {}",
            self.head
        );
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
        if let Conn::Postgres(conn) = &mut tx.conn {
            if self.len() > 1
                && write_unnest(conn, self.head, self.tail, self.width, &self.values).await?
            {
                return Ok(());
            }
        }
        write_chunks(tx, self.width, &self.values, |numbered, size| {
            format!(
                "{} VALUES {} {}",
                self.head,
                placeholders(numbered, size, self.width),
                self.tail
            )
        })
        .await
    }
}

/// One column of rows written by [`write_unnest`]: its values as one array.
enum Column {
    Uuid(Vec<Option<uuid::Uuid>>),
    Text(Vec<Option<String>>),
    Time(Vec<Option<chrono::DateTime<chrono::Utc>>>),
    I64(Vec<Option<i64>>),
    I32(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Column {
    /// The column of `values` (every `width`-th from `at`): typed by its first
    /// value that is not `NULL`; `None` when two values differ in type.
    fn of(values: &[Bind], width: usize, at: usize) -> Option<Self> {
        let cells = || values.iter().skip(at).step_by(width);
        let typed = cells()
            .find(|bind| !matches!(bind, Bind::Null(_)))
            .or_else(|| cells().next())?;
        let rows = values.len() / width;
        let mut column = match typed {
            Bind::Uuid(_) | Bind::Null(NullOf::Uuid) => Self::Uuid(Vec::with_capacity(rows)),
            Bind::Text(_) | Bind::Null(NullOf::Text) => Self::Text(Vec::with_capacity(rows)),
            Bind::Time(_) | Bind::Null(NullOf::Time) => Self::Time(Vec::with_capacity(rows)),
            Bind::I64(_) | Bind::Null(NullOf::I64) => Self::I64(Vec::with_capacity(rows)),
            Bind::I32(_) => Self::I32(Vec::with_capacity(rows)),
            Bind::Bool(_) => Self::Bool(Vec::with_capacity(rows)),
            Bind::Bytes(_) => Self::Bytes(Vec::with_capacity(rows)),
        };
        for cell in cells() {
            match (&mut column, cell) {
                (Self::Uuid(c), Bind::Uuid(v)) => c.push(Some(*v)),
                (Self::Uuid(c), Bind::Null(_)) => c.push(None),
                (Self::Text(c), Bind::Text(v)) => c.push(Some(v.clone())),
                (Self::Text(c), Bind::Null(_)) => c.push(None),
                (Self::Time(c), Bind::Time(v)) => c.push(Some(*v)),
                (Self::Time(c), Bind::Null(_)) => c.push(None),
                (Self::I64(c), Bind::I64(v)) => c.push(Some(*v)),
                (Self::I64(c), Bind::Null(_)) => c.push(None),
                (Self::I32(c), Bind::I32(v)) => c.push(Some(*v)),
                (Self::I32(c), Bind::Null(_)) => c.push(None),
                (Self::Bool(c), Bind::Bool(v)) => c.push(Some(*v)),
                (Self::Bool(c), Bind::Null(_)) => c.push(None),
                (Self::Bytes(c), Bind::Bytes(v)) => c.push(Some(v.clone())),
                (Self::Bytes(c), Bind::Null(_)) => c.push(None),
                _ => return None,
            }
        }
        Some(column)
    }

    /// PostgreSQL's name of the array's type.
    fn array_type(&self) -> &'static str {
        match self {
            Self::Uuid(_) => "uuid[]",
            Self::Text(_) => "text[]",
            Self::Time(_) => "timestamptz[]",
            Self::I64(_) => "int8[]",
            Self::I32(_) => "int4[]",
            Self::Bool(_) => "bool[]",
            Self::Bytes(_) => "bytea[]",
        }
    }

    fn bind(self, args: &mut sqlx::postgres::PgArguments) -> Result<(), sqlx::error::BoxDynError> {
        use sqlx::Arguments;
        match self {
            Self::Uuid(c) => args.add(c),
            Self::Text(c) => args.add(c),
            Self::Time(c) => args.add(c),
            Self::I64(c) => args.add(c),
            Self::I32(c) => args.add(c),
            Self::Bool(c) => args.add(c),
            Self::Bytes(c) => args.add(c),
        }
    }
}

/// Writes every row of `values` with one PostgreSQL statement, each column bound
/// as one array: `INSERT … SELECT * FROM UNNEST($1::uuid[], $2::text[], …)`. One
/// statement shape per table whatever the count, and much less to parse, plan and
/// bind than multi-row `VALUES` lists. `false` (nothing written) when a column's
/// values differ in type: the caller writes them another way.
async fn write_unnest(
    conn: &mut sqlx::PgConnection,
    head: &str,
    tail: &str,
    width: usize,
    values: &[Bind],
) -> Result<bool, StoreError> {
    let mut columns = Vec::with_capacity(width);
    for at in 0..width {
        match Column::of(values, width, at) {
            Some(column) => columns.push(column),
            None => return Ok(false),
        }
    }
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, column)| format!("${}::{}", n + 1, column.array_type()))
        .collect();
    let sql = format!("{head} SELECT * FROM UNNEST({}) {tail}", arrays.join(", "));
    let mut args = sqlx::postgres::PgArguments::default();
    for column in columns {
        column
            .bind(&mut args)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
    }
    sqlx::query_with(&sql, args).execute(conn).await?;
    Ok(true)
}

/// Runs `sql(numbered, rows)` for each chunk of `values` (rows of `width`).
async fn write_chunks(
    tx: &mut Tx<'_>,
    width: usize,
    values: &[Bind],
    sql: impl Fn(bool, usize) -> String,
) -> Result<(), StoreError> {
    let numbered = tx.is_postgres();
    for (start, size) in chunks(values.len() / width) {
        let sql = sql(numbered, size);
        let binds = &values[start * width..(start + size) * width];
        if numbered || size >= SCRIPTED_ROWS_AT_MOST {
            // PostgreSQL; or big enough to be worth a hand-off (and a prepared
            // statement) of its own.
            tx.flush().await?;
            tx.run(&sql, binds).await?;
        } else {
            tx.defer(&sql, binds);
        }
    }
    Ok(())
}

/// Updates of some columns of rows found by key, with few statements:
/// `WITH v (key, a, b) AS (VALUES …) UPDATE t SET a = v.a, b = v.b FROM v WHERE
/// t.key = v.key`. Only the named columns are written, so SQLite rewrites only the
/// indexes that hold them.
#[derive(Debug)]
pub struct Updates {
    table: &'static str,
    key: &'static str,
    columns: Vec<&'static str>,
    values: Vec<Bind>,
}

impl Updates {
    /// Updates of `columns` of `table`'s rows, found by `key`.
    #[must_use]
    pub fn new(table: &'static str, key: &'static str, columns: Vec<&'static str>) -> Self {
        Self {
            table,
            key,
            columns,
            values: Vec::new(),
        }
    }

    /// Adds a row: its key, then a value for each column.
    ///
    /// # Panics
    /// Never in release builds; a debug assertion checks the row's width.
    pub fn push(&mut self, key: Bind, values: impl IntoIterator<Item = Bind>) {
        let before = self.values.len();
        self.values.push(key);
        self.values.extend(values);
        debug_assert_eq!(self.values.len() - before, self.columns.len() + 1);
    }

    /// Runs the updates.
    ///
    /// # Errors
    /// Store failures.
    pub async fn write(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let width = self.columns.len() + 1;
        let names = self.columns.join(", ");
        let set = self
            .columns
            .iter()
            .map(|c| format!("{c} = v.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (table, key) = (self.table, self.key);
        write_chunks(tx, width, &self.values, |numbered, size| {
            format!(
                "WITH v ({key}, {names}) AS (VALUES {}) \
                 UPDATE {table} SET {set} FROM v WHERE {table}.{key} = v.{key}",
                placeholders(numbered, size, width)
            )
        })
        .await
    }
}

/// A row type read the same way from either backend.
pub trait FromEitherRow:
    Send
    + Unpin
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
{
}

impl<T> FromEitherRow for T where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
{
}

/// Reads the rows whose key is one of `keys`, each key `width` values wide:
/// `select` ends with `… IN` (`WHERE id IN`, `WHERE (a, b) IN`) and gets the list
/// appended. Give each key once; at most one statement per 64 keys.
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
    T: FromEitherRow,
{
    let numbered = tx.is_postgres();
    let mut rows = Vec::new();
    for keys in keys.chunks(CHUNKS[0] * width) {
        // Padded with its last key up to a chunk size: a key twice in an `IN` list
        // matches its rows once, and one statement reads the lot.
        let n = keys.len() / width;
        let size = CHUNKS
            .into_iter()
            .rev()
            .find(|size| *size >= n)
            .unwrap_or(n);
        let mut padded = keys.to_vec();
        for _ in n..size {
            padded.extend_from_slice(&keys[keys.len() - width..]);
        }
        let list = if width == 1 {
            placeholders(numbered, 1, size)
        } else {
            format!("({})", placeholders(numbered, size, width))
        };
        rows.extend(
            tx.fetch::<T>(&format!("{select} {list}"), &padded, numbered)
                .await?,
        );
    }
    Ok(rows)
}

/// Chunks of this many rows or more run as statements of their own rather than in
/// a SQLite script.
const SCRIPTED_ROWS_AT_MOST: usize = 16;

impl Tx<'_> {
    /// Runs a write (`$n` placeholders): at once on PostgreSQL, with the next
    /// script on SQLite.
    ///
    /// # Errors
    /// Store failures.
    pub async fn execute(&mut self, sql: &str, binds: &[Bind]) -> Result<(), StoreError> {
        match &mut self.conn {
            Conn::Sqlite(_) => {
                self.pending.push_numbered(sql, binds);
                Ok(())
            }
            Conn::Postgres(_) => self.run(sql, binds).await.map(drop),
        }
    }

    /// Runs a query (`$n` placeholders) after every write given before it: on
    /// SQLite the waiting writes and the query go to the connection as one script.
    ///
    /// # Errors
    /// Store failures.
    pub async fn fetch_all<T>(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<T>, StoreError>
    where
        T: FromEitherRow,
    {
        self.fetch(sql, binds, true).await
    }

    /// [`Tx::fetch_all`] with `?` placeholders on SQLite when `numbered` is false.
    async fn fetch<T>(
        &mut self,
        sql: &str,
        binds: &[Bind],
        numbered: bool,
    ) -> Result<Vec<T>, StoreError>
    where
        T: FromEitherRow,
    {
        Ok(match &mut self.conn {
            Conn::Sqlite(conn) => {
                // The writes return no rows: every row is the query's.
                let mut script = std::mem::take(&mut self.pending);
                if numbered {
                    script.push_numbered(sql, binds);
                } else {
                    script.push_plain(sql, binds);
                }
                sqlx::query_as_with::<_, T, _>(
                    &script.sql,
                    arguments::<sqlx::Sqlite>(&script.binds)?,
                )
                .persistent(script.statements <= self.cached_script_statements)
                .fetch_all(&mut **conn)
                .await?
            }
            Conn::Postgres(conn) => {
                sqlx::query_as_with::<_, T, _>(sql, arguments::<sqlx::Postgres>(binds)?)
                    .fetch_all(&mut **conn)
                    .await?
            }
        })
    }

    /// As [`Tx::fetch_all`], for at most one row.
    ///
    /// # Errors
    /// Store failures.
    pub async fn fetch_optional<T>(
        &mut self,
        sql: &str,
        binds: &[Bind],
    ) -> Result<Option<T>, StoreError>
    where
        T: FromEitherRow,
    {
        Ok(self.fetch_all(sql, binds).await?.into_iter().next())
    }

    /// Runs the writes waiting on SQLite (nothing waits on PostgreSQL). Whoever
    /// commits the transaction flushes first.
    ///
    /// # Errors
    /// Store failures.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.statements == 0 {
            return Ok(());
        }
        let script = std::mem::take(&mut self.pending);
        if let Conn::Sqlite(conn) = &mut self.conn {
            sqlx::query_with(&script.sql, arguments::<sqlx::Sqlite>(&script.binds)?)
                .persistent(script.statements <= self.cached_script_statements)
                .execute(&mut **conn)
                .await?;
        }
        Ok(())
    }

    /// Adds a statement written with `?` placeholders to the SQLite script.
    fn defer(&mut self, sql: &str, binds: &[Bind]) {
        self.pending.push_plain(sql, binds);
    }

    /// Runs a write (`$n` placeholders) now, after every write given before it;
    /// returns how many rows it changed.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn execute_now(
        &mut self,
        sql: &str,
        binds: &[Bind],
    ) -> Result<u64, StoreError> {
        self.flush().await?;
        match self.conn {
            Conn::Sqlite(_) => {
                let mut one = Script::default();
                one.push_numbered(sql, binds);
                self.run(&one.sql, &one.binds).await
            }
            Conn::Postgres(_) => self.run(sql, binds).await,
        }
    }

    /// Runs one statement written with this backend's placeholders, now; returns
    /// how many rows it changed.
    async fn run(&mut self, sql: &str, binds: &[Bind]) -> Result<u64, StoreError> {
        Ok(match &mut self.conn {
            Conn::Sqlite(conn) => sqlx::query_with(sql, arguments::<sqlx::Sqlite>(binds)?)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
            Conn::Postgres(conn) => sqlx::query_with(sql, arguments::<sqlx::Postgres>(binds)?)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tx::Script;

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

    #[test]
    fn a_script_turns_numbered_placeholders_into_plain_ones_in_order() {
        let mut script = Script::default();
        script.push_plain(
            "INSERT INTO t (a, b) VALUES (?, ?)",
            &[1_i64.into(), 2_i64.into()],
        );
        script.push_numbered(
            "UPDATE c SET position = $2 WHERE position < $2 AND name = $1",
            &["x".into(), 7_i64.into()],
        );
        assert_eq!(
            script.sql,
            "INSERT INTO t (a, b) VALUES (?, ?);\n\
             UPDATE c SET position = ? WHERE position < ? AND name = ?;\n"
        );
        assert_eq!(
            script.binds,
            [
                1_i64.into(),
                2_i64.into(),
                7_i64.into(),
                7_i64.into(),
                "x".into()
            ]
        );
        assert_eq!(script.statements, 2);
    }

    #[test]
    fn a_dollar_that_is_not_a_placeholder_is_left_alone() {
        let mut script = Script::default();
        script.push_numbered("SELECT '$9', $1, $", &[1_i64.into()]);
        assert_eq!(script.sql, "SELECT '$9', ?, $;\n");
        assert_eq!(script.binds, [Bind::I64(1)]);
    }
}
