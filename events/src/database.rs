//! The database behind a store, and [`on_pool!`](crate::on_pool) to run the same
//! code on whichever backend it is.

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// The database behind a store: SQLite (embedded default) or PostgreSQL.
///
/// Exposed so that the projections can keep their tables in the same database, and
/// so that tests can reach the raw tables.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// Whether the pool has been closed: then the store's writer appends nothing
    /// more either.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        match self {
            Database::Sqlite(pool) => pool.is_closed(),
            Database::Postgres(pool) => pool.is_closed(),
        }
    }
}

/// Runs the same code against whichever pool a [`Database`] holds: the code is
/// compiled once per backend, so it can use `sqlx` generically.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::database::Database::Sqlite($pool) => $body,
            $crate::database::Database::Postgres($pool) => $body,
        }
    };
}
