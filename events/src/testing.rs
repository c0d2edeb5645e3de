//! Fresh databases for tests, on both backends.
//!
//! Every test gets its own SQLite file, and its own PostgreSQL database created on
//! the server named by `CRM_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`), so tests run in parallel.
//! Without that variable the PostgreSQL half of each test says it was skipped; under
//! CI (`CI=true`) a missing or unreachable PostgreSQL fails the test instead.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Once;

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The variable naming the PostgreSQL server tests create their databases on.
pub const POSTGRES_URL_VAR: &str = "CRM_TEST_POSTGRES_URL";

/// A database that exists for one test, with a master key of its own (in a file,
/// as `crm` reads it).
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to open it with.
    pub url: String,
    /// The master key's file.
    pub master_key_file: PathBuf,
    cleanup: Cleanup,
}

/// A new master key file in a directory of its own.
fn master_key_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crm-test-keys-{}", Uuid::now_v7().simple()));
    crate::vault::MasterKey::generate_file(&dir)
        .unwrap_or_else(|e| panic!("cannot write a test master key: {e}"))
}

#[derive(Debug)]
enum Cleanup {
    SqliteFile(PathBuf),
    PostgresDatabase { server_url: String, name: String },
}

impl TestDatabase {
    /// A new, empty SQLite file in the temporary directory.
    #[must_use]
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("crm-test-{}.db", Uuid::now_v7().simple()));
        Self {
            url: format!("sqlite://{}", path.display()),
            master_key_file: master_key_file(),
            cleanup: Cleanup::SqliteFile(path),
        }
    }

    /// A new, empty PostgreSQL database, or `None` (after saying so) when
    /// `CRM_TEST_POSTGRES_URL` is not set outside CI.
    ///
    /// # Panics
    /// Under CI when the variable is missing, and whenever the server cannot be
    /// reached or the database cannot be created: a skipped backend must not pass
    /// unnoticed.
    pub async fn postgres() -> Option<Self> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let Ok(server_url) = std::env::var(POSTGRES_URL_VAR) else {
            assert!(
                !ci,
                "CI=true but {POSTGRES_URL_VAR} is not set: PostgreSQL must be tested"
            );
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                // Written past the test harness's capture, so it is seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL skipped: set {POSTGRES_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432/test) to test it"
                );
            });
            return None;
        };
        let name = format!("crm_test_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {POSTGRES_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        Some(Self {
            url: with_database(&server_url, &name),
            master_key_file: master_key_file(),
            cleanup: Cleanup::PostgresDatabase { server_url, name },
        })
    }

    /// The master key.
    ///
    /// # Panics
    /// When its file cannot be read.
    #[must_use]
    pub fn master_key(&self) -> crate::vault::MasterKey {
        crate::vault::MasterKey::read(&self.master_key_file)
            .unwrap_or_else(|e| panic!("cannot read the test master key: {e}"))
    }

    /// Options with the master key.
    #[must_use]
    pub fn options(&self) -> crate::StoreOptions {
        crate::StoreOptions {
            master_key: Some(self.master_key()),
            ..crate::StoreOptions::default()
        }
    }

    /// Opens the store, with the master key.
    ///
    /// # Panics
    /// When it cannot be opened.
    pub async fn store(&self) -> crate::EventStore {
        crate::EventStore::open_with(&self.url, self.options())
            .await
            .unwrap_or_else(|e| panic!("cannot open the test store: {e}"))
    }

    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self.cleanup {
            Cleanup::SqliteFile(_) => "sqlite",
            Cleanup::PostgresDatabase { .. } => "postgres",
        }
    }

    /// Removes the database. Called at the end of a passing test; a failing test
    /// leaves its database behind to be looked at.
    pub async fn remove(self) {
        if let Some(dir) = self.master_key_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        match self.cleanup {
            Cleanup::SqliteFile(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::PostgresDatabase { server_url, name } => {
                if let Ok(mut admin) = PgConnection::connect(&server_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Turns `async fn name(db: &TestDatabase)` into two tests, `name::sqlite` and
/// `name::postgres`, each on a fresh database.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::testing::TestDatabase::sqlite();
                super::$name(&db).await;
                db.remove().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = $crate::testing::TestDatabase::postgres().await else {
                    return;
                };
                super::$name(&db).await;
                db.remove().await;
            }
        }
    )*};
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
