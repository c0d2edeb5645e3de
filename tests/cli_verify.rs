//! `crm verify` as an operator runs it: exit 0 on an intact log, 1 naming the first
//! bad position on a tampered one, 2 when the database cannot be reached.

use std::process::{Command, Output};

use crm_events::backend_tests;
use crm_events::catalog::lead::{LeadCreated, LeadTagAdded};
use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::testing::TestDatabase;
use crm_events::{
    Database, DomainEvent, ExpectedVersion, Metadata, StreamAppend, StreamKey, StreamType,
};

backend_tests!(verify_exits_zero_on_an_intact_log_and_one_naming_the_tampered_position);

fn crm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm"))
        .args(args)
        .output()
        .expect("the crm binary runs")
}

async fn verify_exits_zero_on_an_intact_log_and_one_naming_the_tampered_position(
    db: &TestDatabase,
) {
    let store = db.store().await;
    let site = SiteId::generate();
    let created = DomainEvent::from(LeadCreated {
        name: "Ann Lee".into(),
        email: None,
        phone: None,
        source: None,
        stage: Stage::New,
        tags: vec![],
        assigned_agent_id: None,
    });
    let tagged = DomainEvent::from(LeadTagAdded { tag: "vip".into() });
    store
        .append(
            StreamAppend {
                site_id: site,
                stream: StreamKey::new(StreamType::Lead, LeadId::generate().as_uuid()),
                expected: ExpectedVersion::NoStream,
                events: vec![
                    created.to_new_event(),
                    tagged.to_new_event(),
                    tagged.to_new_event(),
                ],
            },
            Metadata::acting_as_self(UserId::generate()),
        )
        .await
        .unwrap();

    let intact = crm(&["verify", "--database-url", &db.url]);
    let stdout = String::from_utf8_lossy(&intact.stdout);
    assert_eq!(intact.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ok: 3 events checked"), "{stdout}");

    // A reader that stops reading (`crm verify | head -1`) is no failure, and never
    // a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args(["verify", "--database-url", &db.url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let cut = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stdout.contains(&format!("site {site}: 3 events")),
        "{stdout}"
    );

    let tamper = match store.database() {
        Database::Sqlite(_) => {
            "DROP TRIGGER events_no_update; UPDATE events SET payload = '{\"tag\":\"x\"}' WHERE position = 2;"
        }
        Database::Postgres(_) => {
            "ALTER TABLE events DISABLE TRIGGER USER; UPDATE events SET payload = '{\"tag\":\"x\"}' WHERE position = 2;"
        }
    };
    match store.database() {
        Database::Sqlite(pool) => sqlx::raw_sql(tamper).execute(pool).await.map(drop),
        Database::Postgres(pool) => sqlx::raw_sql(tamper).execute(pool).await.map(drop),
    }
    .unwrap();

    let broken = crm(&["verify", "--database-url", &db.url]);
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("first bad position 2"), "{stdout}");
    let json = crm(&["verify", "--json", "--database-url", &db.url]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], 2);
}

#[test]
fn verify_exits_two_when_the_database_cannot_be_reached() {
    let out = crm(&[
        "verify",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/none",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database unavailable"));
}
