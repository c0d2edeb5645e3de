//! The database refuses to change the log, and the hash chain catches every change
//! made behind its back (with the triggers switched off, as an attacker with full
//! database access would).

mod support;

use crm_events::backend_tests;
use crm_events::ids::SiteId;
use crm_events::testing::TestDatabase;
use crm_events::{DomainEvent, EventStore, Position, StoreError};
use support::*;

backend_tests!(
    update_delete_and_truncate_are_refused_by_the_database,
    an_altered_payload_is_caught_at_its_position,
    an_altered_actor_is_caught_at_its_position,
    a_deleted_event_is_caught_at_its_position,
    a_deleted_last_event_is_caught,
    an_inserted_event_is_caught_at_its_position,
    reordered_events_are_caught_at_the_first_moved_position,
    a_corrupt_row_gives_an_error_naming_its_position,
);

/// Ten events, alternating between two sites: 1-2 site A, 3-4 B, 5-6 A, 7-8 B, 9-10 A.
async fn ten_events(db: &TestDatabase) -> (EventStore, SiteId, SiteId) {
    let store = db.store().await;
    let (a, b) = (SiteId::generate(), SiteId::generate());
    for site in [a, b, a, b, a] {
        fill(&store, site, 2).await;
    }
    let report = store.verify(None).await.unwrap();
    assert!(report.ok && report.events_checked == 10, "{report:?}");
    (store, a, b)
}

async fn disable_append_only_triggers(store: &EventStore) {
    let sql = match store.database().backend_name() {
        "sqlite" => {
            "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete; \
             DROP TRIGGER events_no_replace;"
        }
        _ => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    exec(store, sql).await.unwrap();
}

async fn tampered(db: &TestDatabase, sql: &str) -> (EventStore, crm_events::VerifyReport) {
    let (store, _, _) = ten_events(db).await;
    disable_append_only_triggers(&store).await;
    exec(&store, sql).await.unwrap();
    let report = store.verify(None).await.unwrap();
    assert!(!report.ok, "{report:?}");
    (store, report)
}

/// Every column of `events`, in order: statements that copy a stored event.
const COLUMNS: &str = "position, event_id, site_id, stream_type, stream_id, stream_version, \
    event_type, schema_version, payload, actor_id, subject_id, impersonation_id, \
    correlation_id, causation_id, idempotency_key, recorded_at, prev_hash, hash";

/// Event 3 copied with a forged payload (and, with `new_position`, moved there).
fn forged_copy(new_position: &str) -> String {
    format!(
        "SELECT {new_position}, event_id, site_id, stream_type, stream_id, stream_version, \
         event_type, schema_version, '{{\"forged\":true}}', actor_id, subject_id, \
         impersonation_id, correlation_id, causation_id, idempotency_key, recorded_at, \
         prev_hash, hash FROM events WHERE position = 3"
    )
}

async fn update_delete_and_truncate_are_refused_by_the_database(db: &TestDatabase) {
    let (store, _, _) = ten_events(db).await;
    let before = store.read_all(Position::START, 100).await.unwrap();
    let mut statements = vec![
        "UPDATE events SET payload = '{}' WHERE position = 3".to_owned(),
        "UPDATE events SET position = position + 100".to_owned(),
        "DELETE FROM events WHERE position = 10".to_owned(),
        "DELETE FROM events".to_owned(),
        // An upsert: its conflict action is an UPDATE.
        format!(
            "INSERT INTO events ({COLUMNS}) {} ON CONFLICT (position) DO UPDATE \
             SET payload = excluded.payload",
            forged_copy("position")
        ),
    ];
    match store.database().backend_name() {
        "sqlite" => statements.extend([
            // Replacing removes the row it collides with without firing DELETE
            // triggers: on the position, on the event id, on the stream version.
            format!(
                "REPLACE INTO events ({COLUMNS}) {}",
                forged_copy("position")
            ),
            format!(
                "INSERT OR REPLACE INTO events ({COLUMNS}) {}",
                forged_copy("position")
            ),
            format!("REPLACE INTO events ({COLUMNS}) {}", forged_copy("11")),
            "UPDATE OR REPLACE events SET position = 4 WHERE position = 3".to_owned(),
            "INSERT INTO events SELECT * FROM events WHERE position = 3 \
             ON CONFLICT DO UPDATE SET payload = '{}'"
                .to_owned(),
        ]),
        _ => statements.push("TRUNCATE events".to_owned()),
    }
    for sql in &statements {
        let error = exec(&store, sql).await.expect_err(sql);
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    assert_eq!(store.read_all(Position::START, 100).await.unwrap(), before);
    assert!(store.verify(None).await.unwrap().ok);
}

async fn an_altered_payload_is_caught_at_its_position(db: &TestDatabase) {
    let (_, report) = tampered(
        db,
        r#"UPDATE events SET payload = '{"tag":"forged"}' WHERE position = 4"#,
    )
    .await;
    assert_eq!(report.first_bad_position, Some(Position(4)));
}

async fn an_altered_actor_is_caught_at_its_position(db: &TestDatabase) {
    let (store, report) = tampered(
        db,
        "UPDATE events SET actor_id = (SELECT actor_id FROM events WHERE position = 1) \
         WHERE position = 7",
    )
    .await;
    assert_eq!(report.first_bad_position, Some(Position(7)));
    let events = store.read_all(Position(6), 1).await.unwrap();
    assert_eq!(
        events[0].actor_id,
        store.read_all(Position::START, 1).await.unwrap()[0].actor_id
    );
}

async fn a_deleted_event_is_caught_at_its_position(db: &TestDatabase) {
    let (store, report) = tampered(db, "DELETE FROM events WHERE position = 5").await;
    assert_eq!(report.first_bad_position, Some(Position(5)));
    // Site A alone: its chain breaks at its next event, 6.
    let site_a = store.read_all(Position::START, 1).await.unwrap()[0].site_id;
    let report = store.verify(Some(site_a)).await.unwrap();
    assert_eq!(report.first_bad_position, Some(Position(6)), "{report:?}");
}

async fn a_deleted_last_event_is_caught(db: &TestDatabase) {
    let (_, report) = tampered(db, "DELETE FROM events WHERE position = 10").await;
    assert_eq!(report.first_bad_position, Some(Position(10)), "{report:?}");
}

async fn an_inserted_event_is_caught_at_its_position(db: &TestDatabase) {
    // Make room at position 5 and slip in a copy of event 4 (with a fresh event id).
    let (store, _, _) = ten_events(db).await;
    disable_append_only_triggers(&store).await;
    let new_id = match store.database().backend_name() {
        "sqlite" => "randomblob(16)",
        _ => "gen_random_uuid()",
    };
    exec(
        &store,
        &format!(
            "UPDATE events SET position = -position WHERE position >= 5; \
             UPDATE events SET position = 1 - position WHERE position < 0; \
             INSERT INTO events SELECT 5, {new_id}, site_id, stream_type, stream_id, \
               stream_version + 100, event_type, schema_version, payload, actor_id, subject_id, \
               impersonation_id, correlation_id, causation_id, idempotency_key, recorded_at, \
               prev_hash, hash FROM events WHERE position = 4;"
        ),
    )
    .await
    .unwrap();
    let report = store.verify(None).await.unwrap();
    assert_eq!(report.first_bad_position, Some(Position(5)), "{report:?}");
}

async fn reordered_events_are_caught_at_the_first_moved_position(db: &TestDatabase) {
    let (_, report) = tampered(
        db,
        "UPDATE events SET position = -1 WHERE position = 4; \
         UPDATE events SET position = 4 WHERE position = 8; \
         UPDATE events SET position = 8 WHERE position = -1;",
    )
    .await;
    assert_eq!(report.first_bad_position, Some(Position(4)), "{report:?}");
}

async fn a_corrupt_row_gives_an_error_naming_its_position(db: &TestDatabase) {
    let (store, _, _) = ten_events(db).await;
    disable_append_only_triggers(&store).await;
    exec(
        &store,
        r#"UPDATE events SET payload = 'not json' WHERE position = 2;
           UPDATE events SET payload = '{"tag": 5}' WHERE position = 4;
           UPDATE events SET stream_type = 'spaceship' WHERE position = 6;"#,
    )
    .await
    .unwrap();
    let events = store.read_all(Position::START, 5).await.unwrap();
    for (position, needle) in [(2, "not JSON"), (4, "does not decode")] {
        let error = DomainEvent::decode(&events[position - 1]).unwrap_err();
        match error {
            StoreError::CorruptEvent {
                position: p,
                reason,
            } => {
                assert_eq!(p, Position(position as i64));
                assert!(reason.contains(needle), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(error_names_position(
            &DomainEvent::decode(&events[position - 1]).unwrap_err(),
            position
        ));
    }
    let error = store.read_all(Position::START, 10).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::CorruptEvent {
                position: Position(6),
                ..
            }
        ),
        "{error:?}"
    );
    let report = store.verify(None).await.unwrap();
    assert_eq!(report.first_bad_position, Some(Position(2)), "{report:?}");
    let site_a = events[0].site_id;
    let report = store.verify(Some(site_a)).await.unwrap();
    assert_eq!(report.first_bad_position, Some(Position(2)), "{report:?}");
}

fn error_names_position(error: &StoreError, position: usize) -> bool {
    error.to_string().contains(&format!("position {position}"))
}
