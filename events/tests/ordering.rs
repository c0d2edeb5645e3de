//! No reader ever skips an event, even with many writing processes.
//!
//! With positions from a plain sequence, transaction A can take position 6, B take 7,
//! and B commit first: a reader that saw 7 and moved its checkpoint past 6 never sees
//! A's event. Here every appending transaction first locks the log-head row, so an
//! append that took a position commits before anyone can take the next one. These
//! tests drive several independent stores (separate pools and writers, as separate
//! server processes would be) against one database, and check that a subscriber and a
//! paged reader each see every acknowledged event exactly once, in order.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use crm_events::backend_tests;
use crm_events::ids::SiteId;
use crm_events::testing::TestDatabase;
use crm_events::{ExpectedVersion, Position};
use futures_util::StreamExt;
use support::*;

backend_tests!(
    concurrent_writers_in_several_processes_are_seen_once_and_in_order,
    a_later_position_never_commits_before_an_earlier_held_one,
);

async fn concurrent_writers_in_several_processes_are_seen_once_and_in_order(db: &TestDatabase) {
    const WRITERS: usize = 6;
    const TASKS_PER_WRITER: usize = 4;
    const APPENDS_PER_TASK: usize = 15;
    let total = WRITERS * TASKS_PER_WRITER * APPENDS_PER_TASK;

    let observer = db.store().await;
    let subscriber = {
        let store = observer.clone();
        tokio::spawn(async move {
            let mut subscription = Box::pin(store.subscribe(Position::START));
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                    .await
                    .expect("the subscriber keeps up")
                    .unwrap()
                    .unwrap();
                seen.push((event.position, event.event_id));
            }
            seen
        })
    };
    let pager = {
        let store = observer.clone();
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(total);
            let mut cursor = Position::START;
            while seen.len() < total {
                let page = store.read_all(cursor, 7).await.unwrap();
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                for event in page {
                    cursor = event.position;
                    seen.push((event.position, event.event_id));
                }
            }
            seen
        })
    };

    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let store = db.store().await;
        for _ in 0..TASKS_PER_WRITER {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let site = SiteId::generate();
                let stream = lead_stream();
                let mut acknowledged = Vec::new();
                for i in 0..APPENDS_PER_TASK {
                    let (expected, event) = if i == 0 {
                        (ExpectedVersion::NoStream, created("Race"))
                    } else {
                        (ExpectedVersion::Exact(i as u64), tagged("t"))
                    };
                    let outcome = store
                        .append(append(site, stream, expected, vec![event]), meta())
                        .await
                        .unwrap();
                    acknowledged.push(outcome.last_position);
                }
                acknowledged
            }));
        }
    }
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert_eq!(acknowledged.len(), total);

    let stored = observer.read_all(Position::START, 10_000).await.unwrap();
    let expected: Vec<_> = stored.iter().map(|e| (e.position, e.event_id)).collect();
    assert_eq!(expected.len(), total);
    assert!(expected.iter().all(|(p, _)| acknowledged.contains(p)));
    for (name, seen) in [
        ("subscriber", subscriber.await.unwrap()),
        ("paged reader", pager.await.unwrap()),
    ] {
        assert_eq!(seen, expected, "the {name} saw every event once, in order");
    }
    assert!(observer.verify(None).await.unwrap().ok);
}

/// Another process's append has taken the next position, written its event there
/// and not committed. This store's append, made meanwhile, must not commit the
/// position after it first: it waits for the held transaction, and nothing past the
/// held position is visible until that commits. On PostgreSQL the test goes on only
/// once the database reports this store's append waiting on the held lock, so the
/// interleaving is certain (were positions taken from a sequence, the later append
/// would commit first and a reader would see position 3 before 2). SQLite gives no
/// outside view of a waiting writer; its write lock is held from the held
/// transaction's first statement, before this store's append is made.
async fn a_later_position_never_commits_before_an_earlier_held_one(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    fill(&store, site, 1).await;
    let postgres = store.database().backend_name() == "postgres";
    let subscriber = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut subscription = Box::pin(store.subscribe(Position::START));
            let mut seen = Vec::new();
            while seen.len() < 5 {
                let event = subscription.next().await.unwrap().unwrap();
                seen.push(event.position.0);
            }
            seen
        })
    };

    let (new_id, begin) = if postgres {
        ("gen_random_uuid()", "BEGIN")
    } else {
        ("randomblob(16)", "BEGIN IMMEDIATE")
    };
    // Takes the log head and writes a copy of event 1 at position 2, as an append
    // of another process would, in a transaction left open.
    let take_position = format!(
        "{begin}; \
         UPDATE event_log_head SET last_position = last_position WHERE id = 1; \
         INSERT INTO events SELECT 2, {new_id}, site_id, stream_type, {new_id}, 1, \
         event_type, schema_version, payload, actor_id, subject_id, impersonation_id, \
         correlation_id, causation_id, idempotency_key, recorded_at, prev_hash, hash \
         FROM events WHERE position = 1; \
         UPDATE event_log_head SET last_position = 2 WHERE id = 1;"
    );
    let other = db.store().await;
    let later = crm_events::on_pool!(other.database(), |pool| {
        let mut held = pool.acquire().await.unwrap();
        let holder: Option<i32> = if postgres {
            Some(
                sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *held)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        sqlx::raw_sql(&take_position)
            .execute(&mut *held)
            .await
            .unwrap();
        let later = {
            let store = store.clone();
            tokio::spawn(async move { fill(&store, site, 3).await })
        };
        until_blocked_by(&store, holder).await;
        assert_eq!(
            store.read_all(Position::START, 10).await.unwrap().len(),
            1,
            "nothing past the held position is visible while it is held"
        );
        assert!(
            !later.is_finished(),
            "the later append waits for the held one"
        );
        sqlx::raw_sql("COMMIT").execute(&mut *held).await.unwrap();
        later
    });
    later.await.unwrap();
    let positions: Vec<i64> = store
        .read_all(Position::START, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(subscriber.await.unwrap(), [1, 2, 3, 4, 5]);
}
