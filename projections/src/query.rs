//! Building list queries with a variable set of filters, the same text for both
//! backends (`$n` placeholders numbered in order of appearance), and opaque cursors.

use chrono::{DateTime, Utc};
use crm_events::store::bulk::arguments;
use crm_events::{Database, StoreError};
use sqlx::{Postgres, Sqlite};
use uuid::Uuid;

pub use crm_events::Bind;

/// Which end of a list comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The latest first: what a reader of a list wants (the default of the API).
    #[default]
    NewestFirst,
    /// In log order: what a file or a replay wants.
    OldestFirst,
}

impl Order {
    /// `desc` or `asc`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "desc" => Some(Self::NewestFirst),
            "asc" => Some(Self::OldestFirst),
            _ => None,
        }
    }

    /// The comparison that reads on past a cursor, and the SQL order word.
    #[must_use]
    pub fn after_and_direction(self) -> (&'static str, &'static str) {
        match self {
            Self::NewestFirst => ("<", "DESC"),
            Self::OldestFirst => (">", "ASC"),
        }
    }
}

/// SQL text with its binds.
#[derive(Debug, Default)]
pub struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    /// Appends text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `bind`.
    pub fn bind(&mut self, bind: Bind) -> &mut Self {
        self.binds.push(bind);
        let n = self.binds.len();
        self.text.push_str(&format!("${n}"));
        self
    }

    /// Runs the query and maps every row.
    pub async fn fetch_all<T>(&self, db: &Database) -> Result<Vec<T>, QueryError>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        Ok(match db {
            Database::Sqlite(pool) => {
                sqlx::query_as_with::<_, T, _>(&self.text, arguments::<Sqlite>(&self.binds)?)
                    .fetch_all(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_as_with::<_, T, _>(&self.text, arguments::<Postgres>(&self.binds)?)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    /// The SQL text.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// How the database would run the query, one line per plan step:
    /// `EXPLAIN QUERY PLAN` on SQLite; on PostgreSQL `EXPLAIN` with sequential scans,
    /// bitmap scans and sorts discouraged, so that a small table shows the index a
    /// large one would use (a plan that still scans the table, or sorts, has no
    /// usable index).
    ///
    /// # Errors
    /// Store failures.
    pub async fn explain(&self, db: &Database) -> Result<Vec<String>, QueryError> {
        Ok(match db {
            Database::Sqlite(pool) => {
                let text = format!("EXPLAIN QUERY PLAN {}", self.text);
                sqlx::query_as_with::<_, (i64, i64, i64, String), _>(
                    &text,
                    arguments::<Sqlite>(&self.binds)?,
                )
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|(_, _, _, step)| step)
                .collect()
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for discouraged in ["enable_seqscan", "enable_bitmapscan", "enable_sort"] {
                    sqlx::query(&format!("SET LOCAL {discouraged} = off"))
                        .execute(&mut *tx)
                        .await?;
                }
                let text = format!("EXPLAIN {}", self.text);
                let plan = sqlx::query_as_with::<_, (String,), _>(
                    &text,
                    arguments::<Postgres>(&self.binds)?,
                )
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(line,)| line)
                .collect();
                tx.rollback().await?;
                plan
            }
        })
    }
}

/// Why a read of a projection failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The cursor was not made by this server (or for this list).
    #[error("cursor is not valid: use next_cursor as returned")]
    BadCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// A page of results: at most `limit` items and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` at the end.
    pub next_cursor: Option<String>,
}

/// The default and largest page sizes.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// A page size as asked, clamped to 1..=500 (50 when not given).
#[must_use]
pub fn clamp_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Encodes where a page ended (its last sort key) as an opaque cursor.
#[must_use]
pub fn encode_cursor(key: &serde_json::Value) -> String {
    hex::encode(key.to_string())
}

/// Decodes a cursor made by [`encode_cursor`] into its parts with `parse`.
///
/// # Errors
/// [`QueryError::BadCursor`] when the cursor was not made by this server.
pub(crate) fn decode_cursor<T>(
    cursor: &str,
    parse: impl FnOnce(&serde_json::Value) -> Option<T>,
) -> Result<T, QueryError> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .as_ref()
        .and_then(parse)
        .ok_or(QueryError::BadCursor)
}

/// The `i`th element of a cursor key as text.
pub(crate) fn text_at(key: &serde_json::Value, i: usize) -> Option<String> {
    // No NUL: no text a list sorts by holds one, and PostgreSQL refuses it.
    key.get(i)?
        .as_str()
        .filter(|text| !text.contains('\0'))
        .map(str::to_owned)
}

/// The `i`th element of a cursor key as a UUID.
pub(crate) fn uuid_at(key: &serde_json::Value, i: usize) -> Option<Uuid> {
    key.get(i)?.as_str()?.parse().ok()
}

/// The `i`th element of a cursor key as a time.
pub(crate) fn time_at(key: &serde_json::Value, i: usize) -> Option<DateTime<Utc>> {
    serde_json::from_value(key.get(i)?.clone()).ok()
}

/// The `i`th element of a cursor key as an integer.
pub(crate) fn i64_at(key: &serde_json::Value, i: usize) -> Option<i64> {
    key.get(i)?.as_i64()
}

/// Turns `limit + 1` fetched rows into a page: the extra row says there is more.
pub(crate) fn paginate<T>(
    mut rows: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> serde_json::Value,
) -> Page<T> {
    let limit = limit as usize;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more {
        rows.last().map(|last| encode_cursor(&key(last)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// `text` made safe inside a `LIKE '%...%' ESCAPE '\'` pattern, lower-cased.
pub(crate) fn contains_pattern(text: &str) -> String {
    let escaped: String = text
        .to_lowercase()
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{escaped}%")
}
