//! Running the same SQL on either backend inside a projection's transaction.

/// Runs one write on a [`crm_events::Tx`] with the given binds (anything that
/// converts into a [`crm_events::Bind`]). On SQLite it waits for the transaction's
/// next script.
macro_rules! execute {
    ($tx:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        $tx.execute($sql, &[$(crm_events::Bind::from($bind)),*]).await
    };
}

/// Fetches at most one row as `$row` on a [`crm_events::Tx`], after every write
/// given before it.
macro_rules! fetch_optional {
    ($tx:expr, $row:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        $tx.fetch_optional::<$row>($sql, &[$(crm_events::Bind::from($bind)),*]).await
    };
}

/// Fetches every row as `$row` on a [`crm_events::Tx`], after every write given
/// before it.
macro_rules! fetch_all {
    ($tx:expr, $row:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        $tx.fetch_all::<$row>($sql, &[$(crm_events::Bind::from($bind)),*]).await
    };
}

pub(crate) use {execute, fetch_all, fetch_optional};

/// The statement that takes every checkpoint row's lock, always in the same order
/// (by name) so that two transactions can never each hold a row the other waits
/// for; every transaction that writes projections (or their indexes) runs it
/// first. On SQLite a write takes the database's single write lock at once.
pub(crate) const fn lock_checkpoints_statement(postgres: bool) -> &'static str {
    if postgres {
        "SELECT name, version, position FROM projection_checkpoints ORDER BY name FOR UPDATE"
    } else {
        "UPDATE projection_checkpoints SET position = position RETURNING name, version, position"
    }
}
