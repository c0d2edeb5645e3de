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
use crm_events::{EventStore, ExpectedVersion, Position};
use futures_util::StreamExt;
use support::*;

backend_tests!(
    concurrent_writers_in_several_processes_are_seen_once_and_in_order,
    an_append_that_holds_the_log_keeps_later_ones_from_being_seen_first,
);

async fn concurrent_writers_in_several_processes_are_seen_once_and_in_order(db: &TestDatabase) {
    const WRITERS: usize = 6;
    const TASKS_PER_WRITER: usize = 4;
    const APPENDS_PER_TASK: usize = 15;
    let total = WRITERS * TASKS_PER_WRITER * APPENDS_PER_TASK;

    let observer = EventStore::open(&db.url).await.unwrap();
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
        let store = EventStore::open(&db.url).await.unwrap();
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

async fn an_append_that_holds_the_log_keeps_later_ones_from_being_seen_first(db: &TestDatabase) {
    let store = EventStore::open(&db.url).await.unwrap();
    let site = SiteId::generate();
    fill(&store, site, 1).await;

    // Another process's append, stopped between taking its position and committing.
    let lock = "UPDATE event_log_head SET last_position = last_position WHERE id = 1 \
                RETURNING last_position";
    let held = match store.database() {
        crm_events::Database::Sqlite(_) => {
            let other = EventStore::open(&db.url).await.unwrap();
            let crm_events::Database::Sqlite(pool) = other.database().clone() else {
                unreachable!()
            };
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let _: i64 = sqlx::query_scalar(lock).fetch_one(&mut *tx).await.unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                tx.commit().await.unwrap();
            })
        }
        crm_events::Database::Postgres(pool) => {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let _: i64 = sqlx::query_scalar(lock).fetch_one(&mut *tx).await.unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
                tx.commit().await.unwrap();
            })
        }
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = {
        let store = store.clone();
        tokio::spawn(async move { fill(&store, site, 3).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.read_all(Position::START, 10).await.unwrap().len(),
        1,
        "nothing after the held position is visible while it is held"
    );
    held.await.unwrap();
    later.await.unwrap();
    let positions: Vec<i64> = store
        .read_all(Position::START, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(positions, [1, 2, 3, 4]);
}
