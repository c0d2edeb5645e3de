//! `crm rebuild` as an operator runs it, on both backends.

mod support;

use std::process::Command;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use crm_projections::lead_manager;
use support::*;

backend_tests!(rebuild_refills_every_projection_and_refuses_unknown_names);

async fn rebuild_refills_every_projection_and_refuses_unknown_names(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Dana").await;
    let before = lead_manager::get(app.settled(&app.projector().names()).await.unwrap(), lead)
        .await
        .unwrap();
    let head = head(&app).await;

    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args(["rebuild", "--database-url", &db.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rebuilt users, lead_manager, settings, notifications, audit_trail"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("up to position {head}")),
        "{stdout}"
    );
    assert_eq!(
        lead_manager::get(app.settled(&app.projector().names()).await.unwrap(), lead)
            .await
            .unwrap(),
        before
    );

    let one = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args([
            "rebuild",
            "--projection",
            "audit_trail",
            "--database-url",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&one.stdout).contains("rebuilt audit_trail up to"));

    let unknown = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args([
            "rebuild",
            "--projection",
            "leads",
            "--database-url",
            &db.url,
        ])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("no projection named \"leads\""), "{stderr}");
}
