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

pub(crate) use {execute, fetch_optional};
