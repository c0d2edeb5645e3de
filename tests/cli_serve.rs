//! The `crm` binary as an operator runs it, on both backends: creating a site and a
//! user, exporting the audit trail, and `crm serve --demo` seeding once, answering
//! HTTP, and stopping cleanly on SIGTERM.

mod support;

use std::process::Command;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use support::serve::{http, start_serve};

backend_tests!(
    sites_users_and_exports_from_the_command_line,
    serve_demo_seeds_once_answers_and_stops_on_sigterm,
);

fn crm(db: &TestDatabase, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args(args)
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn sites_users_and_exports_from_the_command_line(db: &TestDatabase) {
    let (code, out, err) = crm(
        db,
        &[
            "site",
            "create",
            "--name",
            "Acme Homes",
            "--owner-name",
            "Olga Owner",
            "--owner-email",
            "olga@acme.example",
            "--owner-password",
            "a-long-password",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let site = out.split_whitespace().nth(1).unwrap().to_owned();
    let (code, out, err) = crm(
        db,
        &[
            "user",
            "create",
            "--site",
            &site,
            "--name",
            "Ann Agent",
            "--email",
            "ann@acme.example",
            "--role",
            "agent",
            "--password",
            "another-password",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("<ann@acme.example> (agent)"), "{out}");
    let (code, _, err) = crm(
        db,
        &[
            "user",
            "create",
            "--site",
            &site,
            "--name",
            "",
            "--email",
            "bad",
            "--role",
            "boss",
            "--password",
            "x",
        ],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--name")
            && err.contains("--email")
            && err.contains("--role")
            && err.contains("--password"),
        "{err}"
    );
    let (code, _, err) = crm(
        db,
        &[
            "user",
            "create",
            "--site",
            &site,
            "--name",
            "Dup",
            "--email",
            "ann@acme.example",
            "--role",
            "agent",
            "--password",
            "another-password",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already in use"), "{err}");

    let (code, csv, _) = crm(db, &["audit", "export", "--site", &site]);
    assert_eq!(code, 0);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("position,at,event_type,entity_type,entity_id,entity_label,field,before,after,actor_id,actor_name,subject_id,subject_name,impersonation_id,impersonation_reason,kind"));
    // Values as they are (no JSON quotes), with the names beside the ids; the
    // site's setup is by "System".
    assert!(
        csv.contains("UserCreated,user") && csv.contains(",email,,ann@acme.example,"),
        "{csv}"
    );
    assert!(
        csv.contains("SiteCreated,site") && csv.contains(",System,"),
        "{csv}"
    );
    let (code, ndjson, _) = crm(
        db,
        &["audit", "export", "--site", &site, "--format", "ndjson"],
    );
    assert_eq!(code, 0);
    let changes: Vec<serde_json::Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(changes.len(), csv.lines().count() - 1);
    assert_eq!(
        crm(db, &["audit", "export", "--site", &site, "--format", "xml"]).0,
        2
    );
}

async fn serve_demo_seeds_once_answers_and_stops_on_sigterm(db: &TestDatabase) {
    let (mut server, addr, printed) = start_serve(db);
    assert!(printed[0].starts_with("Demo Realty seeded"), "{printed:?}");
    assert!(printed.iter().any(|l| l.contains("agent5@demo.example")));
    let (status, health) = http(&addr, "GET", "/healthz", None);
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["chain"]["ok"], true, "{health}");
    let (status, body) = http(
        &addr,
        "POST",
        "/api/login",
        Some(r#"{"email":"agent3@demo.example","password":"demo-password"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(&addr, "GET", "/api/openapi.json", None);
    assert_eq!(status, 200);

    assert!(server.stop(), "a clean stop on SIGTERM");
    // --demo signs with a key of its own; the sign-in above got its digest at the
    // clean stop, and the log checks against the digests with the public key.
    let note = printed
        .iter()
        .find(|l| l.starts_with("Digests signed with key"))
        .unwrap_or_else(|| panic!("{printed:?}"));
    let public = note
        .split("(public key ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let dir = note.trim().rsplit("written to ").next().unwrap();
    let (code, out, err) = crm(db, &["verify", "--digests", dir, "--public-key", public]);
    assert_eq!(code, 0, "{out}{err}");
    let head = crm(db, &["verify", "--json"]).1;
    let head: serde_json::Value = serde_json::from_str(head.trim()).unwrap();
    assert!(
        out.contains(&format!(
            "the log is complete up to position {}",
            head["events_checked"]
        )),
        "the last sign-in is covered: {out}"
    );

    let (mut again, addr, printed) = start_serve(db);
    assert!(
        printed[0].starts_with("Demo Realty is already there"),
        "seeded once: {printed:?}"
    );
    let (status, body) = http(
        &addr,
        "POST",
        "/api/login",
        Some(r#"{"email":"agent3@demo.example","password":"demo-password"}"#),
    );
    assert_eq!(status, 200, "nothing was lost: {body}");
    assert!(again.stop());
}
