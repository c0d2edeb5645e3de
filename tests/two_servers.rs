//! Two `crm serve` processes on one database, 16 writers each, on the same
//! leads, for a fixed number of requests: no server error, every acknowledged
//! write in the log at the position it was told, and on PostgreSQL no deadlock
//! (`pg_stat_database.deadlocks` unchanged).

mod support;

use std::collections::HashSet;

use crm_events::testing::TestDatabase;
use crm_events::{backend_tests, on_pool, EventStore, Position};
use serde_json::Value;
use support::serve::{login, request, start_serve};

backend_tests!(two_servers_with_sixteen_writers_each_lose_nothing_and_never_fail,);

const WRITERS: usize = 16;
const REQUESTS: usize = 20;
const LEADS: usize = 6;

async fn deadlocks(store: &EventStore) -> i64 {
    match store.database() {
        crm_events::Database::Postgres(pool) => sqlx::query_scalar(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(pool)
        .await
        .unwrap(),
        crm_events::Database::Sqlite(_) => 0,
    }
}

/// One acknowledged write: the position it was told and the text it wrote.
type Acked = (i64, String);

async fn two_servers_with_sixteen_writers_each_lose_nothing_and_never_fail(db: &TestDatabase) {
    let (_first, a, _) = start_serve(db);
    let (_second, b, _) = start_serve(db);
    let store = db.store().await;
    let deadlocks_before = deadlocks(&store).await;

    let owner = login(&a, "owner@demo.example");
    let (_, page) = request(
        &a,
        "GET",
        &format!("/api/leads?scope=site&limit={LEADS}"),
        Some(&owner),
        None,
    )
    .unwrap();
    let page: Value = serde_json::from_str(&page).unwrap();
    let leads: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(leads.len(), LEADS);

    let people = ["owner", "admin", "admin2"];
    let workers: Vec<_> = (0..WRITERS * 2)
        .map(|w| {
            let server = if w % 2 == 0 { a.clone() } else { b.clone() };
            let email = format!("{}@demo.example", people[w % people.len()]);
            let leads = leads.clone();
            std::thread::spawn(move || -> (Vec<Acked>, Vec<String>) {
                let token = login(&server, &email);
                let mut acked = Vec::new();
                let mut failures = Vec::new();
                for i in 0..REQUESTS {
                    let lead = &leads[(w + i) % leads.len()];
                    let text = format!("writer {w} request {i}");
                    let (path, body) = if i % 2 == 0 {
                        (
                            format!("/api/leads/{lead}/notes"),
                            serde_json::json!({ "body": text }),
                        )
                    } else {
                        (
                            format!("/api/leads/{lead}"),
                            serde_json::json!({ "source": text }),
                        )
                    };
                    let method = if i % 2 == 0 { "POST" } else { "PATCH" };
                    match request(
                        &server,
                        method,
                        &path,
                        Some(&token),
                        Some(&body.to_string()),
                    ) {
                        Ok((status, answer)) if status < 300 => {
                            let answer: Value = serde_json::from_str(&answer).unwrap();
                            acked.push((answer["position"].as_i64().unwrap(), text));
                        }
                        // A conflict is the client's to retry, not a failure.
                        Ok((409, _)) => {}
                        Ok((status, answer)) => failures.push(format!("{status}: {answer}")),
                        Err(error) => failures.push(error.to_string()),
                    }
                }
                (acked, failures)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut failures = Vec::new();
    for worker in workers {
        let (mine, failed) = worker.join().unwrap();
        acked.extend(mine);
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        acked.len() > WRITERS * REQUESTS,
        "most writes were accepted: {}",
        acked.len()
    );

    // Every acknowledged write is in the log at the position it was told.
    let mut log = Vec::new();
    let mut cursor = Position::START;
    loop {
        let page = store.read_all(cursor, 5_000).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = last.position;
        log.extend(page);
    }
    let positions: HashSet<i64> = acked.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions.len(), acked.len(), "no position told twice");
    for (position, text) in &acked {
        let event = log
            .iter()
            .find(|e| e.position.0 == *position)
            .unwrap_or_else(|| panic!("position {position} is not in the log"));
        assert!(
            event.payload.contains(text.as_str()),
            "position {position}: {} does not hold {text:?}",
            event.payload
        );
    }
    let dense: Vec<i64> = log.iter().map(|e| e.position.0).collect();
    assert_eq!(dense, (1..=dense.len() as i64).collect::<Vec<_>>());
    assert!(store.verify(None).await.unwrap().ok);
    assert_eq!(deadlocks(&store).await, deadlocks_before, "no deadlock");
    on_pool!(store.database(), |pool| pool.close().await);
}
