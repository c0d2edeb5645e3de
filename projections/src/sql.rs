//! Running the same SQL on either backend inside a projection's transaction.

/// Executes one statement on a [`crm_events::Tx`] with the given binds; returns the
/// number of rows affected.
macro_rules! execute {
    ($tx:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        crm_events::on_tx!($tx, |conn| sqlx::query($sql)
            $(.bind($bind))*
            .execute(&mut **conn)
            .await
            .map(|done| done.rows_affected()))
    };
}

/// Fetches at most one row as `$row` on a [`crm_events::Tx`].
macro_rules! fetch_optional {
    ($tx:expr, $row:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        crm_events::on_tx!($tx, |conn| sqlx::query_as::<_, $row>($sql)
            $(.bind($bind))*
            .fetch_optional(&mut **conn)
            .await)
    };
}

pub(crate) use {execute, fetch_optional};
