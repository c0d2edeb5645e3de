//! Each crate owns the tables it creates, with migrations of its own: this one
//! the log's ([`LOG`]: events, streams, chains, the head, signed digests), the
//! projections crate its read models, the application its credentials, sessions
//! and kept answers. The three share one `_sqlx_migrations` table: a version
//! number belongs to one crate only (the numbers run on across the three), and
//! each crate's migrator leaves the others' versions alone.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPool;

use crate::database::Database;
use crate::error::StoreError;

/// One crate's migrations, for each backend.
#[derive(Debug)]
pub struct Schema {
    /// Whose tables: named in errors.
    pub owner: &'static str,
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// The log's tables.
pub static LOG: Schema = Schema {
    owner: "event store",
    sqlite: &LOG_SQLITE,
    postgres: &LOG_POSTGRES,
};

static LOG_SQLITE: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/sqlite")
};
static LOG_POSTGRES: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/postgres")
};

impl Schema {
    /// Applies what is missing. On PostgreSQL a database whose migrations are all
    /// applied is left untouched: a server connected as a role of least privilege
    /// may not create anything, and runs on a database its owner migrated (`crm
    /// migrate`); only an unmigrated one makes it try, and say what to do if it
    /// may not.
    ///
    /// # Errors
    /// [`StoreError::Migration`], naming whose migration failed.
    pub async fn apply(&self, db: &Database) -> Result<(), StoreError> {
        let failed = |error: sqlx::migrate::MigrateError, hint: &str| {
            StoreError::Migration(sqlx::migrate::MigrateError::Source(
                format!("{} migrations: {error}{hint}", self.owner).into(),
            ))
        };
        match db {
            Database::Sqlite(pool) => loop {
                // SQLite has no lock for migrators: a second process migrating
                // the same file at the same moment makes this run fail on what
                // it committed first (a migration is one transaction, and this
                // one waited for it). Run again, skipping what it applied, as
                // long as someone made progress; a failure with none is this
                // migration's own.
                let before = applied_count(pool).await;
                match self.sqlite.run(pool).await {
                    Ok(()) => return Ok(()),
                    Err(error) if applied_count(pool).await > before => {
                        tracing::debug!(%error, "{} migrations: another process migrated meanwhile", self.owner);
                    }
                    Err(error) => return Err(failed(error, "")),
                }
            },
            Database::Postgres(pool) => {
                if applied(pool, self.postgres).await {
                    return Ok(());
                }
                self.postgres.run(pool).await.map_err(|e| {
                    failed(
                        e,
                        "; apply the migrations as the database's owner first \
                         (crm migrate --database-url <owner's URL>)",
                    )
                })
            }
        }
    }

    /// The versions this crate's migrations have on `db`'s backend (a migration may
    /// be one backend's alone).
    pub fn versions(&self, db: &Database) -> impl Iterator<Item = i64> + '_ {
        let migrator = match db {
            Database::Sqlite(_) => self.sqlite,
            Database::Postgres(_) => self.postgres,
        };
        migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
    }
}

/// Versions applied to the database that none of `schemas` has: migrations of a
/// newer release, which this one must not run on.
///
/// # Errors
/// Store failures.
pub async fn unknown_versions(db: &Database, schemas: &[&Schema]) -> Result<Vec<i64>, StoreError> {
    let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    let applied: Vec<i64> =
        crate::on_pool!(db, |pool| sqlx::query_scalar(sql).fetch_all(pool).await?);
    Ok(applied
        .into_iter()
        .filter(|v| {
            !schemas
                .iter()
                .any(|s| s.versions(db).any(|known| known == *v))
        })
        .collect())
}

/// How many migrations (of any crate) are applied to a SQLite database; 0 before
/// the first.
async fn applied_count(pool: &sqlx::SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Whether every migration of `migrator` is applied, unchanged.
async fn applied(pool: &PgPool, migrator: &Migrator) -> bool {
    let applied: Result<Vec<(i64, Vec<u8>)>, _> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await;
    let Ok(applied) = applied else { return false };
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| {
            applied
                .iter()
                .any(|(version, checksum)| *version == m.version && *checksum == *m.checksum)
        })
}
