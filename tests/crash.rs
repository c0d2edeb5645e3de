//! The real binary killed outright (SIGKILL), on both backends: during writes, and
//! during a rebuild. After a restart nothing that was acknowledged is lost, the
//! projections catch up, and the log verifies.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_events::testing::TestDatabase;
use crm_events::{backend_tests, on_pool};
use serde_json::{json, Value};
use support::serve::{login, request, start_serve};

backend_tests!(a_killed_server_or_rebuild_loses_nothing_acknowledged,);

const WRITERS: usize = 8;

/// A request that must be answered with `status`; the answer's JSON.
fn call(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    status: u16,
) -> Value {
    let body = body.map(Value::to_string);
    let (got, answer) = request(addr, method, path, Some(token), body.as_deref()).unwrap();
    assert_eq!(got, status, "{method} {path}: {answer}");
    serde_json::from_str(&answer).unwrap_or(Value::Null)
}

/// What a writer was told was done.
#[derive(Debug, Clone)]
struct Acknowledged {
    token: String,
    lead: String,
    note: String,
    position: i64,
}

/// Every event of the log as the owner reads it: position -> envelope.
fn the_log(addr: &str, owner: &str) -> std::collections::BTreeMap<i64, Value> {
    let mut log = std::collections::BTreeMap::new();
    let mut after = 0;
    loop {
        let page = call(
            addr,
            "GET",
            &format!("/api/events?after={after}&limit=500"),
            owner,
            None,
            200,
        );
        let items = page["items"].as_array().unwrap();
        let Some(last) = items.last() else { return log };
        after = last["position"].as_i64().unwrap();
        for event in items {
            log.insert(event["position"].as_i64().unwrap(), event.clone());
        }
    }
}

/// What the frontends read that a rebuild writes again: every lead of the site and
/// every audited change.
/// What the projections show: the whole site's leads, and the whole audit trail
/// (every change with its names, every session), compared whole.
fn snapshot(addr: &str, owner: &str) -> (Value, Vec<Value>, Value) {
    let leads = call(
        addr,
        "GET",
        "/api/leads?scope=site&limit=500&sort=name",
        owner,
        None,
        200,
    );
    let sessions = call(
        addr,
        "GET",
        "/api/audit/impersonations?limit=500",
        owner,
        None,
        200,
    );
    let mut changes = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = call(
            addr,
            "GET",
            &format!("/api/audit/changes?order=asc&limit=500{cursor}"),
            owner,
            None,
            200,
        );
        changes.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return (leads["items"].clone(), changes, sessions["items"].clone()),
        }
    }
}

async fn deferred_indexes(db: &TestDatabase) -> i64 {
    let store = db.store().await;
    let count = on_pool!(store.database(), |pool| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM projection_deferred_indexes"
    )
    .fetch_one(pool)
    .await
    .unwrap());
    on_pool!(store.database(), |pool| pool.close().await);
    count
}

fn verify(db: &TestDatabase) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args(["verify", "--database-url", &db.url])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("ok"), "{printed}");
}

async fn a_killed_server_or_rebuild_loses_nothing_acknowledged(db: &TestDatabase) {
    // Writers note on their own lead as fast as they can; the server is killed
    // in the middle of it.
    let (mut server, addr, _) = start_serve(db);
    let mut writers = Vec::new();
    let done = Arc::new(AtomicUsize::new(0));
    for w in 0..WRITERS {
        let agent = format!("agent{}@demo.example", w % 5 + 1);
        let token = login(&addr, &agent);
        let leads = call(
            &addr,
            "GET",
            "/api/leads?limit=5&sort=name",
            &token,
            None,
            200,
        );
        let lead = leads["items"][w / 5]["id"].as_str().unwrap().to_owned();
        let (addr, done) = (addr.clone(), done.clone());
        writers.push(std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let note = format!("writer {w} note {i}");
                let body = json!({"body": note}).to_string();
                let path = format!("/api/leads/{lead}/notes");
                match request(&addr, "POST", &path, Some(&token), Some(&body)) {
                    Ok((201, answer)) => {
                        let answer: Value = serde_json::from_str(&answer).unwrap();
                        acknowledged.push(Acknowledged {
                            token: token.clone(),
                            lead: lead.clone(),
                            note,
                            position: answer["position"].as_i64().unwrap(),
                        });
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, answer)) => panic!("a note answered {status}: {answer}"),
                    // Killed: whatever was in flight was never acknowledged.
                    Err(_) => return acknowledged,
                }
            }
            unreachable!()
        }));
    }
    let started = Instant::now();
    while done.load(Ordering::Relaxed) < 1_500 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    let acknowledged: Vec<Acknowledged> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    eprintln!("{} notes acknowledged before the kill", acknowledged.len());
    assert!(acknowledged.len() >= 1_000, "{} writes", acknowledged.len());

    // Restarted: every acknowledged note is in the log where it was said to be, and
    // on its lead (the sessions survived too).
    let (mut server, addr, printed) = start_serve(db);
    assert!(
        printed[0].starts_with("Demo Realty is already there"),
        "{printed:?}"
    );
    let owner = login(&addr, "owner@demo.example");
    let log = the_log(&addr, &owner);
    for ack in &acknowledged {
        let event = &log[&ack.position];
        assert_eq!(event["event_type"], "LeadNoteAdded", "{ack:?}: {event}");
        assert!(
            event["payload"].to_string().contains(&ack.note),
            "{ack:?}: {event}"
        );
    }
    let mut by_lead: std::collections::HashMap<&str, Vec<&Acknowledged>> = Default::default();
    for ack in &acknowledged {
        by_lead.entry(ack.lead.as_str()).or_default().push(ack);
    }
    for (lead, acks) in by_lead {
        let detail = call(
            &addr,
            "GET",
            &format!("/api/leads/{lead}"),
            &acks[0].token,
            None,
            200,
        );
        let notes: Vec<&str> = detail["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["body"].as_str().unwrap())
            .collect();
        for ack in acks {
            assert!(notes.contains(&ack.note.as_str()), "{ack:?} is on its lead");
        }
    }
    verify(db);
    let before = snapshot(&addr, &owner);
    assert!(
        before.1.len() > 1_000,
        "the audit trail holds the notes' changes"
    );
    assert!(server.stop());

    // A rebuild killed after it emptied the projections and set their indexes aside.
    let mut killed_midway = false;
    for attempt in 1..=5 {
        let mut rebuild = Command::new(env!("CARGO_BIN_EXE_crm"))
            .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
            .args(["rebuild", "--database-url", &db.url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let store = db.store().await;
        let ended = loop {
            if let Some(status) = rebuild.try_wait().unwrap() {
                break Some(status);
            }
            let deferred: i64 = on_pool!(store.database(), |pool| sqlx::query_scalar(
                "SELECT COUNT(*) FROM projection_deferred_indexes"
            )
            .fetch_one(pool)
            .await
            .unwrap());
            if deferred > 0 {
                rebuild.kill().unwrap();
                rebuild.wait().unwrap();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        on_pool!(store.database(), |pool| pool.close().await);
        match ended {
            None => {
                eprintln!("rebuild killed midway at attempt {attempt}");
                killed_midway = true;
                break;
            }
            Some(status) => assert!(status.success(), "a rebuild that ran through succeeds"),
        }
    }
    assert!(killed_midway, "the rebuild was killed before it finished");
    assert!(
        deferred_indexes(db).await > 0,
        "the rebuild had set indexes aside"
    );

    // The next start finishes the job: indexes back, projections as before.
    let (mut server, addr, _) = start_serve(db);
    assert_eq!(deferred_indexes(db).await, 0);
    let owner = login(&addr, "owner@demo.example");
    assert!(
        snapshot(&addr, &owner) == before,
        "the projections caught up as they were"
    );
    verify(db);
    assert!(server.stop());
}
