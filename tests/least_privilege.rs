//! Least privilege in the database, through the real binary. On PostgreSQL the
//! owner applies the migrations (`crm migrate --app-role`), and `crm serve` runs
//! the README's walk-through connected as a role that may only SELECT and INSERT
//! the events table: UPDATE, DELETE and TRUNCATE are refused to it by privilege
//! (not only by the triggers, which it cannot switch off). SQLite has no roles:
//! there `crm migrate` applies the migrations, refuses `--app-role` saying so, and
//! the same walk-through runs.

mod support;

use std::process::Command;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::serve::{login, request, start_serve_at, Server};

backend_tests!(crm_serve_runs_on_a_role_that_may_only_read_and_append_the_log,);

fn crm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        // Where `crm serve --demo` (support::serve) keeps its keys for PostgreSQL,
        // the master key among them.
        .env("XDG_DATA_HOME", std::env::temp_dir().join("crm-test-data"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn call(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, answer) = request(addr, method, path, Some(token), body.as_deref()).unwrap();
    assert!(status < 300, "{method} {path}: {status} {answer}");
    serde_json::from_str(&answer).unwrap_or(Value::Null)
}

/// The README's walk-through: log in as agent1, change a lead's phone, return,
/// read the change in the session's audit.
fn walk_through(addr: &str, phone: &str) {
    let admin = login(addr, "admin@demo.example");
    let users = call(addr, "GET", "/api/users?limit=500", &admin, None);
    let agent = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "agent1@demo.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        addr,
        "POST",
        "/api/impersonation",
        &admin,
        Some(json!({"user_id": agent, "reason": "Fix Dana's phone number"})),
    );
    let leads = call(addr, "GET", "/api/leads?limit=1", &admin, None);
    let lead = leads["items"][0]["id"].as_str().unwrap().to_owned();
    call(
        addr,
        "PATCH",
        &format!("/api/leads/{lead}"),
        &admin,
        Some(json!({ "phone": phone })),
    );
    call(addr, "DELETE", "/api/impersonation", &admin, None);
    let sessions = call(addr, "GET", "/api/audit/impersonations", &admin, None);
    let session = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    let changes = call(
        addr,
        "GET",
        &format!("/api/audit/impersonations/{session}"),
        &admin,
        None,
    );
    assert!(
        changes["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "phone" && c["after"] == phone),
        "{changes}"
    );
}

fn serve(url: &str) -> (Server, String) {
    let (server, addr, _) = start_serve_at(url);
    (server, addr)
}

async fn crm_serve_runs_on_a_role_that_may_only_read_and_append_the_log(db: &TestDatabase) {
    if db.backend() == "sqlite" {
        let (ok, said) = crm(&["migrate", "--database-url", &db.url]);
        assert!(ok, "{said}");
        let (ok, said) = crm(&[
            "migrate",
            "--database-url",
            &db.url,
            "--app-role",
            "crm_app",
        ]);
        assert!(!ok && said.contains("roles are PostgreSQL's"), "{said}");
        let (mut server, addr) = serve(&db.url);
        walk_through(&addr, "+1 555 0199");
        assert!(server.stop());
        return;
    }

    let owner = sqlx::PgPool::connect(&db.url).await.unwrap();
    let role = format!("crm_app_{}", uuid::Uuid::now_v7().simple());
    sqlx::raw_sql(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&owner)
        .await
        .unwrap();
    let (ok, said) = crm(&["migrate", "--database-url", &db.url, "--app-role", &role]);
    assert!(ok, "{said}");
    let as_app = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(as_app, db.url);

    let (mut server, addr) = serve(&as_app);
    walk_through(&addr, "+1 555 0199");
    // A rebuild empties and re-indexes the projections: their tables are its own.
    assert!(server.stop());
    let (ok, said) = crm(&["rebuild", "--database-url", &as_app]);
    assert!(ok, "{said}");
    let (mut server, addr) = serve(&as_app);
    walk_through(&addr, "+1 555 0198");
    assert!(server.stop());

    // Refused by privilege: the role may not even ask, whatever the triggers.
    let app = sqlx::PgPool::connect(&as_app).await.unwrap();
    for sql in [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "DROP TRIGGER events_no_update_or_delete ON events",
    ] {
        let error = sqlx::raw_sql(sql).execute(&app).await.expect_err(sql);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{sql}: refused by privilege, not by a trigger: {error}"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app)
        .await
        .unwrap();
    assert!(count > 0);
    app.close().await;
    // The database goes with the test; the role with it.
    sqlx::raw_sql(&format!(
        "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role};"
    ))
    .execute(&owner)
    .await
    .unwrap();
    owner.close().await;
    let server_url = db.url.rsplit_once('/').unwrap().0.to_owned() + "/postgres";
    let cluster = sqlx::PgPool::connect(&server_url).await.unwrap();
    sqlx::raw_sql(&format!("DROP ROLE {role}"))
        .execute(&cluster)
        .await
        .unwrap();
    cluster.close().await;
}
