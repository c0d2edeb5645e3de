//! Rows beside the log, written in the transaction that appends the events
//! recording them: credentials with `UserCreated` and `UserPasswordChanged`, a
//! session with `UserLoggedIn`, the impersonation a session holds with
//! `ImpersonationStarted` and `ImpersonationEnded`. Either both commit or
//! neither: a failed append leaves the rows untouched, a refused row appends
//! nothing, and a caller that stops waiting (a timeout, a client gone) cannot
//! come between them, since the writer runs both in one transaction whatever the
//! caller does.
//!
//! The store runs the statements as given; what they mean is the application's.
//! It knows no table of theirs.

use super::bind::Bind;
use super::tx::Tx;
use crate::error::StoreError;

/// One statement beside the log, run after the append's events are written and
/// before its commit.
#[derive(Debug, Clone, PartialEq)]
pub struct SideWrite {
    /// What the row is, for errors and logs ("credentials", "session", ...).
    pub what: &'static str,
    /// One statement with `$n` placeholders, valid on both backends.
    pub sql: &'static str,
    pub binds: Vec<Bind>,
    /// How many rows it must change; anything else refuses the whole append.
    pub changes: Changes,
}

/// How many rows a [`SideWrite`] must change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changes {
    /// Whatever it finds: an end that someone else may have written first.
    Any,
    /// Exactly one: the row it is about, in the state it was decided on (a
    /// compare-and-set).
    One,
}

impl SideWrite {
    /// A statement that must change exactly one row.
    #[must_use]
    pub fn one(what: &'static str, sql: &'static str, binds: Vec<Bind>) -> Self {
        Self {
            what,
            sql,
            binds,
            changes: Changes::One,
        }
    }

    /// A statement that may change any number of rows.
    #[must_use]
    pub fn any(what: &'static str, sql: &'static str, binds: Vec<Bind>) -> Self {
        Self {
            what,
            sql,
            binds,
            changes: Changes::Any,
        }
    }
}

/// Runs `writes` in the open transaction, in order, after whatever waits to run
/// before them.
///
/// # Errors
/// [`StoreError::SideWriteRefused`] when a statement hits a unique key or
/// changes another number of rows than it must; database failures as they are.
pub(crate) async fn write_all(tx: &mut Tx<'_>, writes: &[SideWrite]) -> Result<(), StoreError> {
    for write in writes {
        let changed = match tx.execute_now(write.sql, &write.binds).await {
            Ok(changed) => changed,
            Err(error) if error.is_unique_violation() => {
                return Err(StoreError::SideWriteRefused {
                    what: write.what,
                    taken: true,
                })
            }
            Err(error) => return Err(error),
        };
        if write.changes == Changes::One && changed != 1 {
            return Err(StoreError::SideWriteRefused {
                what: write.what,
                taken: false,
            });
        }
    }
    Ok(())
}
