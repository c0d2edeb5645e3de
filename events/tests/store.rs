//! The event store's contract, run on SQLite and on PostgreSQL.

mod support;

use std::collections::HashSet;

use crm_events::backend_tests;
use crm_events::ids::{CorrelationId, ImpersonationId, SiteId, UserId};
use crm_events::testing::TestDatabase;
use crm_events::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError, StreamAppend, StreamKey,
    StreamType,
};
use futures_util::StreamExt;
use support::*;

backend_tests!(
    an_append_reads_back_with_its_whole_envelope,
    expected_versions_are_enforced_and_a_conflict_appends_nothing,
    a_retry_with_the_same_idempotency_key_appends_nothing,
    bad_appends_are_refused_and_leave_the_log_as_it_was,
    an_atomic_append_to_several_streams_is_all_or_nothing,
    reading_a_missing_stream_is_not_found,
    many_concurrent_appenders_all_land_in_one_dense_order,
    subscribe_catches_up_then_follows_live_appends,
    a_subscriber_sees_appends_made_by_another_store_on_the_same_database,
    a_closed_database_gives_unavailable_and_loses_nothing,
    committed_batches_are_announced_once_whether_written_alone_or_the_long_way,
    an_append_that_waits_for_the_log_head_holds_no_position_meanwhile,
);

/// Another process's append holds the log head (its transaction has begun) while
/// this store's writer, which knows the head from its own last commit, writes a
/// batch in one statement. That statement waits for the head before it writes
/// anything: the other append then writes at the same next position and commits
/// (with the statement holding that position, the two would wait for each other
/// until the database broke the deadlock), and this store's batch lands after it.
async fn an_append_that_waits_for_the_log_head_holds_no_position_meanwhile(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = fill(&store, site, 2).await;
    let head = store.head().await.unwrap().0;
    let postgres = store.database().backend_name() == "postgres";
    let (new_id, other) = if postgres {
        ("gen_random_uuid()", "BEGIN")
    } else {
        ("randomblob(16)", "BEGIN IMMEDIATE")
    };
    let copy_last = format!(
        "INSERT INTO events SELECT position + 1, {new_id}, site_id, stream_type, {new_id}, 1, \
         event_type, schema_version, payload, actor_id, subject_id, impersonation_id, \
         correlation_id, causation_id, idempotency_key, recorded_at, prev_hash, hash \
         FROM events WHERE position = {head}"
    );
    let take_head = "UPDATE event_log_head SET last_position = last_position WHERE id = 1";
    let move_head = format!(
        "UPDATE event_log_head SET last_position = {} WHERE id = 1",
        head + 1
    );

    let mine = || {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    append(site, stream, ExpectedVersion::Any, vec![tagged("mine")]),
                    meta(),
                )
                .await
        })
    };
    let outcome = crm_events::on_pool!(store.database(), |pool| {
        let mut conn = pool.acquire().await.unwrap();
        let holder: Option<i32> = if postgres {
            Some(
                sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        sqlx::raw_sql(&format!("{other}; {take_head};"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let mine = mine();
        // This store's one-statement append is now waiting for the head (as
        // PostgreSQL reports it; SQLite's write lock was taken before the append).
        until_blocked_by(&store, holder).await;
        assert!(!mine.is_finished());
        sqlx::raw_sql(&format!("{copy_last}; {move_head}; COMMIT;"))
            .execute(&mut *conn)
            .await
            .expect("the other append commits: nothing waits on it");
        mine.await.unwrap()
    });
    let outcome = outcome.expect("this store's append lands after the other");
    assert_eq!(outcome.last_position.0, head + 2);
    let log = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        (1..=head + 2).collect::<Vec<_>>()
    );
}

async fn an_append_reads_back_with_its_whole_envelope(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = lead_stream();
    let admin = UserId::generate();
    let agent = UserId::generate();
    let meta = Metadata {
        actor_id: admin,
        subject_id: agent,
        impersonation_id: Some(ImpersonationId::generate()),
        correlation_id: CorrelationId::generate(),
        causation_id: Some(uuid::Uuid::now_v7()),
        idempotency_key: Some("req-1".into()),
    };
    let before = chrono::Utc::now();
    let outcome = store
        .append(
            append(
                site,
                stream,
                ExpectedVersion::NoStream,
                vec![created("Ann"), tagged("vip")],
            ),
            meta.clone(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.last_position, Position(2));
    assert_eq!(outcome.streams[0].first_position, Position(1));
    assert_eq!(outcome.streams[0].version, 2);
    assert!(!outcome.replayed);

    let events = store.read_stream(stream, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.position, Position(i as i64 + 1));
        assert_eq!(event.stream_version, i as u64 + 1);
        assert_eq!(event.site_id, site);
        assert_eq!(event.stream, stream);
        assert_eq!(event.actor_id, admin);
        assert_eq!(event.subject_id, agent);
        assert_eq!(event.impersonation_id, meta.impersonation_id);
        assert_eq!(event.correlation_id, meta.correlation_id);
        assert_eq!(event.causation_id, meta.causation_id);
        assert_eq!(event.idempotency_key.as_deref(), Some("req-1"));
        assert_eq!(event.event_id.as_uuid().get_version_num(), 7);
        assert!(event.recorded_at >= before - chrono::Duration::seconds(1));
        assert_eq!(event.recorded_at.timestamp_subsec_nanos() % 1_000, 0);
    }
    assert_eq!(events[0].event_type, "LeadCreated");
    assert_eq!(events[0].schema_version, 2);
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert_eq!(store.read_all(Position::START, 10).await.unwrap(), events);
    assert_eq!(store.read_all(Position(1), 10).await.unwrap(), events[1..]);
    assert_eq!(store.read_stream(stream, 1).await.unwrap(), events[1..]);
    assert_eq!(store.head().await.unwrap(), Position(2));
    let decoded = crm_events::DomainEvent::decode(&events[0]).unwrap();
    assert_eq!(decoded.event_type(), "LeadCreated");
}

async fn expected_versions_are_enforced_and_a_conflict_appends_nothing(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = fill(&store, site, 3).await;

    let again = store
        .append(
            append(site, stream, ExpectedVersion::NoStream, vec![created("B")]),
            meta(),
        )
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::Conflict {
                actual: 3,
                expected: ExpectedVersion::NoStream,
                ..
            })
        ),
        "{again:?}"
    );
    let stale = store
        .append(
            append(site, stream, ExpectedVersion::Exact(2), vec![tagged("x")]),
            meta(),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { actual: 3, .. })),
        "{stale:?}"
    );
    let missing = store
        .append(
            append(
                site,
                lead_stream(),
                ExpectedVersion::Exact(1),
                vec![created("C")],
            ),
            meta(),
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::Conflict { actual: 0, .. })),
        "{missing:?}"
    );
    assert_eq!(store.head().await.unwrap(), Position(3));

    let exact = store
        .append(
            append(site, stream, ExpectedVersion::Exact(3), vec![tagged("y")]),
            meta(),
        )
        .await
        .unwrap();
    assert_eq!(exact.streams[0].version, 4);
    let any = store
        .append(
            append(site, stream, ExpectedVersion::Any, vec![tagged("z")]),
            meta(),
        )
        .await
        .unwrap();
    assert_eq!(any.streams[0].version, 5);
    assert_eq!(store.stream_version(stream).await.unwrap(), 5);
}

async fn a_retry_with_the_same_idempotency_key_appends_nothing(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = lead_stream();
    let mut meta = meta();
    meta.idempotency_key = Some("create-lead-42".into());
    let request = append(
        site,
        stream,
        ExpectedVersion::NoStream,
        vec![created("Ann")],
    );

    let first = store.append(request.clone(), meta.clone()).await.unwrap();
    let retry = store.append(request.clone(), meta.clone()).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.streams, first.streams);
    assert_eq!(retry.last_position, first.last_position);
    assert_eq!(store.head().await.unwrap(), Position(1));

    // A retry made after the first attempt landed expects the new version: still a retry.
    let late_retry = StreamAppend {
        expected: ExpectedVersion::Exact(1),
        ..request.clone()
    };
    assert!(
        store
            .append(late_retry, meta.clone())
            .await
            .unwrap()
            .replayed
    );

    let different = append(site, stream, ExpectedVersion::Any, vec![tagged("other")]);
    let reused = store.append(different, meta.clone()).await;
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused { .. })),
        "{reused:?}"
    );

    // Keys are scoped to a site: another site may use the same key.
    let elsewhere = store
        .append(
            append(
                SiteId::generate(),
                lead_stream(),
                ExpectedVersion::NoStream,
                vec![created("B")],
            ),
            meta.clone(),
        )
        .await
        .unwrap();
    assert!(!elsewhere.replayed);
    assert_eq!(store.head().await.unwrap(), Position(2));

    // Concurrent retries of one request land once.
    let mut meta = meta.clone();
    meta.idempotency_key = Some("burst".into());
    let request = append(
        site,
        lead_stream(),
        ExpectedVersion::NoStream,
        vec![created("C")],
    );
    let tries = (0..8).map(|_| store.append(request.clone(), meta.clone()));
    let outcomes = futures_util::future::join_all(tries).await;
    let fresh = outcomes
        .iter()
        .filter(|o| !o.as_ref().unwrap().replayed)
        .count();
    assert_eq!(fresh, 1);
    assert_eq!(store.head().await.unwrap(), Position(3));
}

async fn bad_appends_are_refused_and_leave_the_log_as_it_was(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = fill(&store, site, 2).await;
    let head = store.head().await.unwrap();

    let refused = |result: Result<_, StoreError>| result.expect_err("must be refused");
    let e = refused(store.append_atomic(vec![], meta()).await);
    assert!(matches!(e, StoreError::EmptyAppend), "{e:?}");
    let e = refused(
        store
            .append(append(site, stream, ExpectedVersion::Any, vec![]), meta())
            .await,
    );
    assert!(matches!(e, StoreError::EmptyAppend), "{e:?}");

    let unknown = NewEvent {
        event_type: "LeadTeleported".into(),
        schema_version: 1,
        payload: "{}".into(),
    };
    let e = refused(
        store
            .append(
                append(site, stream, ExpectedVersion::Any, vec![unknown]),
                meta(),
            )
            .await,
    );
    assert!(matches!(e, StoreError::UnknownEventType { .. }), "{e:?}");
    let old = NewEvent {
        schema_version: 1,
        ..created("Old")
    };
    let e = refused(
        store
            .append(
                append(site, stream, ExpectedVersion::Any, vec![old]),
                meta(),
            )
            .await,
    );
    assert!(
        matches!(
            e,
            StoreError::UnknownEventType {
                schema_version: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let wrong_stream = StreamKey::new(StreamType::User, stream.id);
    let e = refused(
        store
            .append(
                append(site, wrong_stream, ExpectedVersion::Any, vec![tagged("x")]),
                meta(),
            )
            .await,
    );
    assert!(matches!(e, StoreError::UnknownEventType { .. }), "{e:?}");

    let huge = NewEvent {
        payload: format!(r#"{{"tag":"{}"}}"#, "x".repeat(300 * 1024)),
        ..tagged("")
    };
    let e = refused(
        store
            .append(
                append(site, stream, ExpectedVersion::Any, vec![huge]),
                meta(),
            )
            .await,
    );
    assert!(
        matches!(e, StoreError::PayloadTooLarge { limit: 262_144, .. }),
        "{e:?}"
    );
    for payload in ["[1]", "not json", "\"tag\""] {
        let bad = NewEvent {
            payload: payload.into(),
            ..tagged("")
        };
        let e = refused(
            store
                .append(
                    append(site, stream, ExpectedVersion::Any, vec![bad]),
                    meta(),
                )
                .await,
        );
        assert!(
            matches!(e, StoreError::InvalidPayload { .. }),
            "{payload}: {e:?}"
        );
    }

    let other_site = SiteId::generate();
    let e = refused(
        store
            .append(
                append(other_site, stream, ExpectedVersion::Any, vec![tagged("x")]),
                meta(),
            )
            .await,
    );
    assert!(
        matches!(e, StoreError::CrossSite(s) if s == stream),
        "{e:?}"
    );
    let mixed = vec![
        append(
            site,
            lead_stream(),
            ExpectedVersion::NoStream,
            vec![created("A")],
        ),
        append(
            other_site,
            lead_stream(),
            ExpectedVersion::NoStream,
            vec![created("B")],
        ),
    ];
    let e = refused(store.append_atomic(mixed, meta()).await);
    assert!(matches!(e, StoreError::CrossSite(_)), "{e:?}");

    let mut long_key = meta();
    long_key.idempotency_key = Some("k".repeat(crm_events::store::MAX_IDEMPOTENCY_KEY_LEN + 1));
    let e = refused(
        store
            .append(
                append(site, stream, ExpectedVersion::Any, vec![tagged("x")]),
                long_key,
            )
            .await,
    );
    assert!(matches!(e, StoreError::InvalidIdempotencyKey), "{e:?}");

    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.read_all(Position::START, 100).await.unwrap().len(), 2);
    assert!(store.verify(None).await.unwrap().ok);
}

async fn an_atomic_append_to_several_streams_is_all_or_nothing(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let existing = fill(&store, site, 1).await;
    let fresh = lead_stream();

    let conflicting = vec![
        append(site, fresh, ExpectedVersion::NoStream, vec![created("A")]),
        append(site, existing, ExpectedVersion::Exact(7), vec![tagged("x")]),
    ];
    let e = store.append_atomic(conflicting, meta()).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { stream, .. } if stream == existing),
        "{e:?}"
    );
    assert_eq!(store.stream_version(fresh).await.unwrap(), 0);
    assert_eq!(store.head().await.unwrap(), Position(1));

    let both = vec![
        append(site, fresh, ExpectedVersion::NoStream, vec![created("A")]),
        append(
            site,
            existing,
            ExpectedVersion::Exact(1),
            vec![tagged("x"), tagged("y")],
        ),
    ];
    let outcome = store.append_atomic(both, meta()).await.unwrap();
    assert_eq!(outcome.streams.len(), 2);
    assert_eq!(
        (
            outcome.streams[0].first_position,
            outcome.streams[0].version
        ),
        (Position(2), 1)
    );
    assert_eq!(
        (
            outcome.streams[1].first_position,
            outcome.streams[1].version
        ),
        (Position(3), 3)
    );
    assert_eq!(outcome.last_position, Position(4));
}

async fn reading_a_missing_stream_is_not_found(db: &TestDatabase) {
    let store = db.store().await;
    let stream = lead_stream();
    let e = store.read_stream(stream, 0).await.unwrap_err();
    assert!(
        matches!(e, StoreError::StreamNotFound(s) if s == stream),
        "{e:?}"
    );
    assert_eq!(store.stream_version(stream).await.unwrap(), 0);
}

async fn many_concurrent_appenders_all_land_in_one_dense_order(db: &TestDatabase) {
    let store = db.store().await;
    let sites = [SiteId::generate(), SiteId::generate(), SiteId::generate()];
    let shared = lead_stream();
    store
        .append(
            append(
                sites[0],
                shared,
                ExpectedVersion::NoStream,
                vec![created("Shared")],
            ),
            meta(),
        )
        .await
        .unwrap();

    // 48 tasks: most create and grow their own streams, some race on one stream with
    // exact versions, retrying on conflict as a client would.
    let tasks = (0..48).map(|task| {
        let store = store.clone();
        let site = sites[task % sites.len()];
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            if task % 6 == 0 {
                for i in 0..10 {
                    loop {
                        let version = store.stream_version(shared).await.unwrap();
                        let result = store
                            .append(
                                append(
                                    sites[0],
                                    shared,
                                    ExpectedVersion::Exact(version),
                                    vec![tagged(&format!("{task}-{i}"))],
                                ),
                                meta(),
                            )
                            .await;
                        match result {
                            Ok(outcome) => {
                                acknowledged.push(outcome.last_position);
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
            } else {
                let stream = lead_stream();
                let first = store
                    .append(
                        append(
                            site,
                            stream,
                            ExpectedVersion::NoStream,
                            vec![created("Own")],
                        ),
                        meta(),
                    )
                    .await
                    .unwrap();
                acknowledged.push(first.last_position);
                for i in 0..20u64 {
                    let outcome = store
                        .append(
                            append(
                                site,
                                stream,
                                ExpectedVersion::Exact(i + 1),
                                vec![tagged("t")],
                            ),
                            meta(),
                        )
                        .await
                        .unwrap();
                    acknowledged.push(outcome.last_position);
                }
            }
            acknowledged
        })
    });
    let mut acknowledged: Vec<Position> = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let total = 1 + 8 * 10 + 40 * 21;
    assert_eq!(acknowledged.len() + 1, total);

    let all = store.read_all(Position::START, 10_000).await.unwrap();
    let positions: Vec<i64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (1..=total as i64).collect::<Vec<_>>());
    let stored: HashSet<Position> = all.iter().map(|e| e.position).collect();
    assert!(acknowledged.iter().all(|p| stored.contains(p)));
    assert_eq!(store.stream_version(shared).await.unwrap(), 81);
    let report = store.verify(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, total as u64);
}

async fn subscribe_catches_up_then_follows_live_appends(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    fill(&store, site, 5).await;
    let mut subscription = Box::pin(store.subscribe(Position(2)));
    for expected in 3..=5 {
        let event = subscription.next().await.unwrap().unwrap();
        assert_eq!(event.position, Position(expected));
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..5 {
                fill(&store, site, 2).await;
            }
        })
    };
    for expected in 6..=15 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
            .await
            .expect("a live append reaches the subscriber")
            .unwrap()
            .unwrap();
        assert_eq!(event.position, Position(expected));
    }
    writer.await.unwrap();
}

async fn a_subscriber_sees_appends_made_by_another_store_on_the_same_database(db: &TestDatabase) {
    let reader = db.store().await;
    let writer = db.store().await;
    let site = SiteId::generate();
    let mut subscription = Box::pin(reader.subscribe(Position::START));
    fill(&writer, site, 3).await;
    for expected in 1..=3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
            .await
            .expect("another store's append reaches the subscriber")
            .unwrap()
            .unwrap();
        assert_eq!(event.position, Position(expected));
    }
}

async fn a_closed_database_gives_unavailable_and_loses_nothing(db: &TestDatabase) {
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = fill(&store, site, 2).await;
    match store.database() {
        crm_events::Database::Sqlite(pool) => pool.close().await,
        crm_events::Database::Postgres(pool) => pool.close().await,
    }
    let e = store
        .append(
            append(site, stream, ExpectedVersion::Exact(2), vec![tagged("x")]),
            meta(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let e = store.read_all(Position::START, 10).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    drop(store);

    let reopened = db.store().await;
    assert_eq!(reopened.head().await.unwrap(), Position(2));
    assert!(reopened.verify(None).await.unwrap().ok);
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let e = EventStore::open("postgres://postgres@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let e = EventStore::open("sqlite:///nonexistent-dir/sub/crm.db")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let e = EventStore::open("mysql://x").await.unwrap_err();
    assert!(matches!(e, StoreError::UnsupportedUrl(_)), "{e:?}");
}

/// The positions of every batch announced so far.
fn announced(
    commits: &mut tokio::sync::mpsc::Receiver<Vec<crm_events::RecordedEvent>>,
) -> Vec<Vec<i64>> {
    let mut batches = Vec::new();
    while let Ok(batch) = commits.try_recv() {
        batches.push(batch.iter().map(|e| e.position.0).collect());
    }
    batches
}

/// Each batch this store commits is announced once, with its events, before the
/// append is answered: whether it was written on its own (the writer knew what it
/// needed) or the long way (a new stream; another store's append took the next
/// position). Another store's appends and refused appends are not announced.
async fn committed_batches_are_announced_once_whether_written_alone_or_the_long_way(
    db: &TestDatabase,
) {
    let store = db.store().await;
    let other = db.store().await;
    let mut commits = store.follow_commits();
    let site = SiteId::generate();
    let tag = |store: &EventStore, stream, version: u64, name: &str| {
        let (store, name) = (store.clone(), name.to_owned());
        async move {
            store
                .append(
                    append(
                        site,
                        stream,
                        ExpectedVersion::Exact(version),
                        vec![tagged(&name)],
                    ),
                    meta(),
                )
                .await
        }
    };

    // A new stream: the writer reads what it needs, in a transaction.
    let stream = fill(&store, site, 1).await;
    assert_eq!(announced(&mut commits), [vec![1]]);
    // Then it knows the stream and the site's chain: the batch is written alone.
    tag(&store, stream, 1, "a").await.unwrap();
    assert_eq!(announced(&mut commits), [vec![2]]);

    // Another store appends: not this store's to announce. This store's next
    // batch finds its position taken, goes the long way and lands after it.
    fill(&other, site, 1).await;
    let outcome = tag(&store, stream, 2, "b").await.unwrap();
    assert_eq!(outcome.last_position, Position(4));
    assert_eq!(announced(&mut commits), [vec![4]]);

    // A refused append commits nothing and announces nothing.
    let refused = tag(&store, stream, 2, "stale").await.unwrap_err();
    assert!(
        matches!(refused, StoreError::Conflict { .. }),
        "{refused:?}"
    );
    assert!(announced(&mut commits).is_empty());

    // What was announced is what the log holds.
    tag(&store, stream, 3, "c").await.unwrap();
    let mut heard = Vec::new();
    while let Ok(batch) = commits.try_recv() {
        heard.extend(batch);
    }
    let log = store.read_all(Position(4), 10).await.unwrap();
    assert_eq!(heard, log);
    let versions: Vec<u64> = store
        .read_stream(stream, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert!(store.verify(None).await.unwrap().ok);
}

/// On PostgreSQL a store announces its appends (`NOTIFY`) only while another
/// process listens: a store alone sends none; once a second store listens, it
/// hears of the first one's appends with no polling at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_announced_only_while_another_process_listens() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let store = db.store().await;
    let site = SiteId::generate();
    let stream = fill(&store, site, 1).await;
    // A bare listener, not a store's: the store does not count it.
    let mut bare = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    bare.listen("crm_events").await.unwrap();
    // The store has looked for listeners by now (it looks every second).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    store
        .append(
            append(site, stream, ExpectedVersion::Any, vec![tagged("alone")]),
            meta(),
        )
        .await
        .unwrap();
    let heard = tokio::time::timeout(std::time::Duration::from_millis(500), bare.recv()).await;
    assert!(heard.is_err(), "announced with nobody listening: {heard:?}");

    // A second store, which never polls: it hears of appends only if told.
    let listening = EventStore::open_with(
        &db.url,
        crm_events::StoreOptions {
            poll_interval: std::time::Duration::from_secs(3_600),
            ..crm_events::StoreOptions::default()
        },
    )
    .await
    .unwrap();
    let mut news = Box::pin(listening.subscribe(store.head().await.unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let heard = loop {
        let outcome = store
            .append(
                append(site, stream, ExpectedVersion::Any, vec![tagged("told")]),
                meta(),
            )
            .await
            .unwrap();
        match tokio::time::timeout(std::time::Duration::from_millis(200), news.next()).await {
            Ok(Some(event)) => break (event.unwrap().position, outcome.last_position),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the listening store was never told"
            ),
        }
    };
    assert!(heard.0 <= heard.1);
    drop(bare);
    db.remove().await;
}
