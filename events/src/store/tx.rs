//! A transaction of either backend, as the store's writer and the projections
//! write through it.

use sqlx::{PgConnection, SqliteConnection};

use super::bind::Bind;

/// A connection inside an open transaction, of either backend, and the statements
/// waiting to run on it.
///
/// On SQLite every statement is a hand-off to the connection's worker thread, which
/// costs more than most of the statements themselves. So writes given to a SQLite
/// `Tx` wait and run together as one script (one hand-off) when something reads,
/// when the caller flushes, and before the store commits; a read always sees every
/// write given before it. On PostgreSQL each statement runs at once.
#[derive(Debug)]
pub struct Tx<'c> {
    pub(crate) conn: Conn<'c>,
    pub(crate) pending: Script,
    pub(crate) undisturbed: bool,
    /// Scripts of at most this many statements are kept prepared.
    pub(crate) cached_script_statements: usize,
}

#[derive(Debug)]
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Tx<'_> {
    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.conn {
            Conn::Sqlite(_) => "sqlite",
            Conn::Postgres(_) => "postgres",
        }
    }

    /// Whether this is a PostgreSQL transaction.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self.conn, Conn::Postgres(_))
    }

    /// Whether whoever began the transaction vouches that the rows it writes are
    /// as its own last committed transaction left them (nobody else wrote them
    /// since, and that transaction did not fail): then copies kept from that
    /// transaction need not be read back. False unless set.
    ///
    /// Whoever keeps such copies must drop them all on a disturbed transaction, as
    /// the copies written in a transaction that failed may be wrong.
    #[must_use]
    pub fn undisturbed(&self) -> bool {
        self.undisturbed
    }

    /// Vouches (or not) for the rows this transaction writes (see
    /// [`Tx::undisturbed`]).
    pub fn set_undisturbed(&mut self, undisturbed: bool) {
        self.undisturbed = undisturbed;
    }
}

impl<'c> From<&'c mut SqliteConnection> for Tx<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Tx {
            conn: Conn::Sqlite(conn),
            pending: Script::default(),
            undisturbed: false,
            cached_script_statements: CACHED_SCRIPT_STATEMENTS,
        }
    }
}

impl<'c> From<&'c mut PgConnection> for Tx<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Tx {
            conn: Conn::Postgres(conn),
            pending: Script::default(),
            undisturbed: false,
            cached_script_statements: CACHED_SCRIPT_STATEMENTS,
        }
    }
}

/// Scripts of at most this many statements are kept prepared, outside the writer
/// (which keeps its own, see the SQLite backend): a catch-up's or a rebuild's
/// scripts rarely repeat, and keeping those of up to 16 statements held about
/// 40 MB of prepared statements through a rebuild of 1,000,000 events, for no
/// gain in speed. Single statements repeat, and are kept.
pub(crate) const CACHED_SCRIPT_STATEMENTS: usize = 1;

/// SQLite statements waiting to run as one script, with `?` placeholders and their
/// binds in order.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind>,
    pub(crate) statements: usize,
}

impl Script {
    /// Adds a statement written with `?` placeholders.
    pub(crate) fn push_plain(&mut self, sql: &str, binds: &[Bind]) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.binds.extend_from_slice(binds);
        self.statements += 1;
    }

    /// Adds a statement written with `$n` placeholders: each becomes `?` and gets
    /// its value in order of appearance (a number may appear more than once). The
    /// statements are the crate's own, with no `$` inside a string literal.
    pub(crate) fn push_numbered(&mut self, sql: &str, binds: &[Bind]) {
        let mut rest = sql;
        while let Some(at) = rest.find('$') {
            self.sql.push_str(&rest[..at]);
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len() - at - 1, |n| n);
            match rest[at + 1..at + 1 + digits].parse::<usize>() {
                Ok(n) if (1..=binds.len()).contains(&n) => {
                    self.sql.push('?');
                    self.binds.push(binds[n - 1].clone());
                }
                // Not a placeholder of ours: keep the text (SQLite reports it).
                _ => self.sql.push_str(&rest[at..at + 1 + digits]),
            }
            rest = &rest[at + 1 + digits..];
        }
        self.sql.push_str(rest);
        self.sql.push_str(";\n");
        self.statements += 1;
    }
}
