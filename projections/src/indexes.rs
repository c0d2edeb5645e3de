//! Setting a projection's secondary indexes aside while it is rebuilt.
//!
//! A rebuild writes every row again; building an index once from the finished
//! table is much cheaper than updating it row by row. [`defer`] records each
//! secondary index of the tables (not primary keys, not unique indexes: those
//! enforce something; not the indexes the fold itself reads by) in `projection_deferred_indexes` and drops it, in one
//! transaction; [`restore`] creates every recorded index again and forgets it, in
//! one transaction. A rebuild that stops in between leaves the records, and the next
//! start or rebuild restores them.

use crm_events::{on_pool, Database, StoreError};

/// The secondary, non-unique indexes of a table, with the statement that creates
/// each (the database's own text of it).
const SQLITE_INDEXES: &str = "SELECT name, sql FROM sqlite_master \
     WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL \
     AND sql NOT LIKE 'CREATE UNIQUE%' ORDER BY name";
const POSTGRES_INDEXES: &str = "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) \
     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
     JOIN pg_class t ON t.oid = x.indrelid \
     WHERE t.relname = $1 AND t.relnamespace = current_schema()::regnamespace \
     AND NOT x.indisprimary AND NOT x.indisunique ORDER BY 1";

/// The first statement of [`defer`] and [`restore`]: it takes the checkpoints' row
/// locks (and, on SQLite, the write lock) the way every fold does first, in the
/// same order. So a catch-up or an append of this or another process waits for the
/// indexes to be dropped or created, instead of holding a projection table (or a
/// checkpoint row) the index statement needs while it waits for something the index
/// statement holds (a deadlock on PostgreSQL, an immediate "database is locked" on
/// SQLite).
fn lock_checkpoints(db: &Database) -> &'static str {
    crate::sql::lock_checkpoints_statement(matches!(db, Database::Postgres(_)))
}

/// Records and drops the secondary indexes of `tables`, but those the fold itself
/// reads (`folding`).
///
/// # Errors
/// Store failures.
pub(crate) async fn defer(
    db: &Database,
    tables: &[&str],
    folding: &[&str],
) -> Result<(), StoreError> {
    let list = match db {
        Database::Sqlite(_) => SQLITE_INDEXES,
        Database::Postgres(_) => POSTGRES_INDEXES,
    };
    on_pool!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(lock_checkpoints(db)).execute(&mut *tx).await?;
        for table in tables {
            let indexes: Vec<(String, String)> = sqlx::query_as(list)
                .bind(*table)
                .fetch_all(&mut *tx)
                .await?;
            for (name, definition) in indexes {
                if folding.contains(&name.as_str()) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO projection_deferred_indexes (name, definition) VALUES ($1, $2)",
                )
                .bind(&name)
                .bind(&definition)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&format!("DROP INDEX \"{name}\""))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
    });
    Ok(())
}

/// Creates every index set aside again; returns how many.
///
/// # Errors
/// Store failures.
pub(crate) async fn restore(db: &Database) -> Result<usize, StoreError> {
    Ok(on_pool!(db, |pool| {
        // Nearly always none: then no write transaction either.
        let any: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM projection_deferred_indexes LIMIT 1")
                .fetch_optional(pool)
                .await?;
        if any.is_none() {
            return Ok(0);
        }
        let mut tx = pool.begin().await?;
        sqlx::query(lock_checkpoints(db)).execute(&mut *tx).await?;
        let deferred: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, definition FROM projection_deferred_indexes ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (name, definition) in &deferred {
            tracing::info!(index = %name, "creating an index set aside by a rebuild");
            // Two processes starting at once may both find it: the second one's is a
            // no-op rather than a failed start.
            let create = definition.strip_prefix("CREATE INDEX ").map_or_else(
                || definition.clone(),
                |rest| format!("CREATE INDEX IF NOT EXISTS {rest}"),
            );
            sqlx::query(&create).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM projection_deferred_indexes")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        deferred.len()
    }))
}
