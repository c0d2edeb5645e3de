//! A database made before each crate owned its migrations opens unchanged. The
//! fixtures (`tests/fixtures/schema-0010/`) were made by that release: its demo
//! site, a sign-in, a lead created with an `Idempotency-Key`, and an admin logged
//! in as agent1 changing a lead's stage and phone, as a SQLite file and as a
//! PostgreSQL dump. Opened by this release, on both backends: no
//! migration runs again or anew, the chain verifies, the projections and the
//! sign-in work as they did, and the kept answer is still found; a database with
//! a migration this release does not know is refused with words.

mod support;

use crm::app::{App, Clock};
use crm_events::backend_tests;
use crm_events::ids::CorrelationId;
use crm_events::testing::TestDatabase;
use crm_events::EventStore;
use support::*;

backend_tests!(
    a_database_of_the_last_release_opens_unchanged_and_works,
    a_database_of_a_newer_release_is_refused,
    two_servers_starting_at_once_migrate_an_empty_database_once,
);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema-0010");

/// Puts the fixture's database where `db` is.
async fn restore(db: &TestDatabase) {
    match db.backend() {
        "sqlite" => {
            let path = db.url.trim_start_matches("sqlite://");
            std::fs::copy(format!("{FIXTURES}/crm.sqlite"), path).unwrap();
        }
        _ => {
            let dump = std::fs::read_to_string(format!("{FIXTURES}/crm.sql")).unwrap();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            sqlx::raw_sql(&dump).execute(&mut conn).await.unwrap();
        }
    }
}

/// The last release's migrations.
const RELEASED: i64 = 10;

/// This release's migrations on a backend: 14 is PostgreSQL's alone (the audit
/// trail's key begins with the site there; SQLite's planner reads a site's pages by
/// the site's index already).
fn current(db: &TestDatabase) -> Vec<i64> {
    let mut versions: Vec<i64> = (1..=13).collect();
    if db.backend() == "postgres" {
        versions.push(14);
    }
    versions.extend([15, 16]);
    versions
}

/// The fixture's migrations, read before anything of this release opens it.
async fn released_migrations(db: &TestDatabase) -> Vec<(i64, Vec<u8>, String)> {
    let sql = "SELECT version, checksum, CAST(installed_on AS TEXT) FROM _sqlx_migrations \
               ORDER BY version";
    if db.backend() == "sqlite" {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
    } else {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
    }
}

/// Every applied migration: version, checksum, when it was applied.
async fn migrations(store: &EventStore) -> Vec<(i64, Vec<u8>, String)> {
    let sql = "SELECT version, checksum, CAST(installed_on AS TEXT) FROM _sqlx_migrations \
               ORDER BY version";
    crm_events::on_pool!(store.database(), |pool| sqlx::query_as(sql)
        .fetch_all(pool)
        .await
        .unwrap())
}

async fn a_database_of_the_last_release_opens_unchanged_and_works(db: &TestDatabase) {
    restore(db).await;
    let before = released_migrations(db).await;
    assert_eq!(
        before.iter().map(|m| m.0).collect::<Vec<_>>(),
        (1..=RELEASED).collect::<Vec<_>>()
    );

    let app = App::start(db.store().await, Clock::system()).await.unwrap();
    let after = migrations(app.store()).await;
    assert_eq!(
        after[..before.len()],
        before[..],
        "no migration of the last release ran again"
    );
    assert_eq!(
        after.iter().map(|m| m.0).collect::<Vec<_>>(),
        current(db),
        "this release's migrations were applied"
    );
    let report = app.store().verify(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.events_checked, 657);

    // The demo's people sign in with their passwords, and see what they saw.
    let admin = login(&app, "admin@demo.example").await;
    let agent = login(&app, "agent1@demo.example").await;
    let users = app.users_list(&admin.ctx, None, 50).await.unwrap();
    assert_eq!(users.items.len(), 9);
    let sessions = app
        .audit_sessions(&admin.ctx, &Default::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(sessions.items.len(), 1);
    let session = &sessions.items[0];
    assert_eq!(session.admin.email, "admin@demo.example");
    assert_eq!(session.subject.email, "agent1@demo.example");
    let id = crm_events::ids::ImpersonationId::from_uuid(session.session.id);
    let detail = app.audit_session(&admin.ctx, id).await.unwrap();
    let mut fields: Vec<&str> = detail.changes.iter().map(|c| c.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["phone", "stage"]);
    for change in &detail.changes {
        assert_eq!(change.actor_id, session.session.admin_id);
        assert_eq!(change.subject_id, session.session.subject_id);
        assert_eq!(change.actor_name.as_deref(), Some("Adam Admin"));
        assert_eq!(
            change.impersonation_reason.as_deref(),
            Some("Fixing a template for the fixture")
        );
    }
    let mine = app
        .leads(&agent.ctx, Default::default(), None, 50)
        .await
        .unwrap();
    assert!(!mine.items.is_empty(), "agent1's leads are there");
    // The Lead Manager, rebuilt for its new version, knows who held each lead: the
    // agent's screen now, folded from the log, is what the Lead Manager answers.
    let past = app
        .past_leads(
            &admin.ctx,
            Some(agent.id),
            None,
            Default::default(),
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(past.page, mine, "agent1's screen now, as a past view");
    let site = app
        .leads(
            &admin.ctx,
            crm::app::reads::LeadQuery {
                q: Some("Fixture Lead".into()),
                whole_site: true,
                ..Default::default()
            },
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(site.items.len(), 1, "the lead made by the last release");
    // Its values were stored before sealing: plain, and readable until it is
    // erased; erased, they read as erased like any other lead's.
    let old = crm_events::ids::LeadId::from_uuid(site.items[0].id);
    let plain = app.store().read_stream(
        crm_events::StreamKey::new(crm_events::StreamType::Lead, old.as_uuid()),
        0,
    );
    assert!(plain.await.unwrap()[0].payload.contains("Fixture Lead"));
    app.erase_lead(
        &admin.ctx,
        old,
        crm::domain::values::Reason::parse("asked to be forgotten").unwrap(),
    )
    .await
    .unwrap();
    let erased = app
        .store()
        .read_stream(
            crm_events::StreamKey::new(crm_events::StreamType::Lead, old.as_uuid()),
            0,
        )
        .await
        .unwrap();
    assert!(erased.iter().all(|e| !e.payload.contains("Fixture Lead")));
    assert!(erased[0].payload.contains(crm_events::vault::ERASED));

    // The answer kept for the admin's session of the last release is found.
    let kept: Vec<(Vec<u8>, String)> = crm_events::on_pool!(app.store().database(), |pool| {
        sqlx::query_as("SELECT token_hash, key FROM http_idempotency")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    assert_eq!(kept.len(), 1);
    let session: [u8; 32] = kept[0].0.as_slice().try_into().unwrap();
    let answer = app
        .kept_response(&session, &kept[0].1)
        .await
        .unwrap()
        .expect("the kept answer");
    assert_eq!(answer.status, 201);

    // And it goes on: a new write lands after the old log and verifies.
    let lead = lead_of(&app, &agent.ctx, "After the transition").await;
    assert!(app.lead_detail(&agent.ctx, lead).await.is_ok());
    let report = app.store().verify(None).await.unwrap();
    assert!(report.ok && report.events_checked > 657, "{report:?}");
    let again = App::start(db.store().await, Clock::system()).await.unwrap();
    assert_eq!(migrations(again.store()).await, after);
    assert!(again
        .login("owner@demo.example", PASSWORD, CorrelationId::generate())
        .await
        .is_ok());
}

async fn a_database_of_a_newer_release_is_refused(db: &TestDatabase) {
    restore(db).await;
    let store = db.store().await;
    crm_events::on_pool!(store.database(), |pool| sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer release', TRUE, $1, 0)"
    )
    .bind(vec![0u8; 48])
    .execute(pool)
    .await
    .map(drop)
    .unwrap());
    let refused = App::start(store, Clock::system()).await.unwrap_err();
    let said = refused.to_string();
    assert!(
        said.contains("9999") && said.contains("newer release"),
        "{said}"
    );
}

/// Two servers started at the same moment on an empty database: each applies
/// what is missing of the three crates' migrations, neither fails, and each
/// migration is applied once.
async fn two_servers_starting_at_once_migrate_an_empty_database_once(db: &TestDatabase) {
    let start = || async {
        let store = EventStore::open(&db.url).await.map_err(|e| e.to_string())?;
        App::start(store, Clock::system())
            .await
            .map_err(|e| e.to_string())
    };
    let (one, other) = tokio::join!(start(), start());
    let (one, _other) = (one.unwrap(), other.unwrap());
    let applied = migrations(one.store()).await;
    assert_eq!(applied.iter().map(|m| m.0).collect::<Vec<_>>(), current(db));
}
