//! A projection that cannot fold is isolated: it stops where it was and says why,
//! the other projections go on folding, appends go on, `/healthz` says which one
//! stopped and how far behind the log it is, and reads answer that they cannot
//! be served rather than serve what is not the log. The next start tries it
//! again.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crm::app::{App, AppError, Clock};
use crm::domain::lead::LeadEdit;
use crm_events::catalog::values::Stage;
use crm_events::testing::TestDatabase;
use crm_events::{backend_tests, DomainEvent, EventStore, StoreError, Tx};
use crm_projections::{Decoded, Projection};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use support::http::Api;
use support::*;

backend_tests!(
    a_panicking_projection_stops_alone_and_the_next_start_folds_it_again,
    a_projection_whose_statements_are_refused_stops_and_health_says_so,
    a_rebuild_by_another_process_never_hides_an_acknowledged_write,
    once_appends_pause_the_projections_reach_the_head_with_no_read,
);

/// A projection of the embedder's that panics on a lead named "Boom" while
/// `fragile` holds.
#[derive(Debug)]
struct Fragile {
    fragile: AtomicBool,
}

impl Projection for Fragile {
    fn name(&self) -> &'static str {
        "fragile"
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        matches!(event, DomainEvent::LeadCreated(_))
    }

    fn apply<'a>(
        &'a self,
        _tx: &'a mut Tx<'_>,
        events: &'a [&'a Decoded],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let boom = events
            .iter()
            .any(|d| matches!(&d.event, DomainEvent::LeadCreated(lead) if lead.name == "Boom"));
        assert!(
            !(boom && self.fragile.load(Ordering::SeqCst)),
            "a lead named Boom"
        );
        Box::pin(async { Ok(()) })
    }
}

async fn started(store: EventStore, fragile: bool) -> App {
    let mut projections = crm_projections::all();
    projections.push(Arc::new(Fragile {
        fragile: AtomicBool::new(fragile),
    }));
    App::start_with(store, Clock::system(), projections)
        .await
        .unwrap()
}

/// The status of one projection in a `/healthz` answer.
fn status_of<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {health}"))
}

async fn a_panicking_projection_stops_alone_and_the_next_start_folds_it_again(db: &TestDatabase) {
    let store = db.store().await;
    let app = started(store.clone(), true).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let agent = &s.agent1.ctx;
    lead_of(&app, agent, "Ada Lovelace").await;
    let before_boom = head(&app).await;
    app.settle().await.unwrap();

    // The fold of "Boom" panics: the append stands, and so do the next ones.
    let boom = lead_of(&app, agent, "Boom").await;
    let after = lead_of(&app, agent, "Cy Young").await;
    let stopped = app.settle().await.unwrap_err();
    let AppError::Store(StoreError::ProjectionStopped {
        name,
        position,
        reason,
    }) = &stopped
    else {
        panic!("{stopped:?}");
    };
    assert_eq!((name.as_str(), *position), ("fragile", before_boom));
    assert!(reason.contains("a lead named Boom"), "{reason}");

    // The other projections folded everything, "Boom" and what came after.
    let end = head(&app).await;
    let health = app.health().await.unwrap();
    assert!(!health.ok());
    for status in &health.projections {
        if status.name == "fragile" {
            assert_eq!(status.position, before_boom);
            assert_eq!(status.behind, end.0 - before_boom.0);
            assert!(status.stopped.is_some());
        } else {
            assert_eq!((status.position, status.behind), (end, 0), "{status:?}");
            assert_eq!(status.stopped, None);
        }
    }
    let ids: Vec<_> = app
        .store()
        .read_all(before_boom, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.stream.id)
        .collect();
    assert!(ids.contains(&boom.as_uuid()) && ids.contains(&after.as_uuid()));

    // Over HTTP: health is degraded and says which; the reads of the other
    // projections and the writes go on.
    let api = Api::new(app.clone());
    let token = api.login("agent1@demo.example").await;
    let health = api
        .call(axum::http::Method::GET, "/healthz", None, None, &[])
        .await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "degraded");
    let fragile = status_of(&health.body, "fragile");
    assert_eq!(fragile["position"], before_boom.0);
    assert!(fragile["behind"].as_i64().unwrap() >= 2);
    assert!(fragile["stopped"].as_str().unwrap().contains("panicked"));
    assert_eq!(status_of(&health.body, "lead_manager")["behind"], 0);
    let created = api
        .post(&token, "/api/leads", json!({"name": "Dee Written"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let leads = api.get(&token, "/api/leads").await;
    let names: Vec<&str> = leads.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lead| lead["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Dee Written", "Cy Young", "Boom", "Ada Lovelace"]);

    // A restart (with the fold fixed) folds it from where it stopped.
    drop(api);
    drop(app);
    let restarted = started(store, false).await;
    restarted.settle().await.unwrap();
    let health = restarted.health().await.unwrap();
    assert!(health.ok(), "{health:?}");
    let end = head(&restarted).await;
    assert!(health.projections.iter().all(|p| p.position == end));
}

async fn a_projection_whose_statements_are_refused_stops_and_health_says_so(db: &TestDatabase) {
    let (api, _) = support::http::demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let lead = api
        .post(&agent, "/api/leads", json!({"name": "Dana Whitfield"}))
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    let path = format!("/api/leads/{}", lead.id());
    // An operator's mistake: a table of the Lead Manager is gone.
    exec(&api.app, "DROP TABLE lead_notes").await;
    let written = head(&api.app).await;
    // The note is recorded; its answer, read from the Lead Manager, cannot be.
    api.post(
        &agent,
        &format!("{path}/notes"),
        json!({"body": "Call after 5"}),
    )
    .await
    .problem(503, "projection_stopped");
    let appended = api.app.store().read_all(written, 10).await.unwrap();
    assert_eq!(
        appended
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["LeadNoteAdded"]
    );
    let read = api.get(&agent, &path).await;
    read.problem(503, "projection_stopped");
    assert!(
        read.body["detail"]
            .as_str()
            .unwrap()
            .contains("lead_manager"),
        "{}",
        read.body
    );

    let health = api
        .call(axum::http::Method::GET, "/healthz", None, None, &[])
        .await;
    assert_eq!(health.body["status"], "degraded");
    let lead_manager = status_of(&health.body, "lead_manager");
    assert!(
        lead_manager["stopped"]
            .as_str()
            .unwrap()
            .contains("lead_notes"),
        "{lead_manager}"
    );
    assert!(lead_manager["behind"].as_i64().unwrap() >= 1);
    assert_eq!(status_of(&health.body, "audit_trail")["behind"], 0);
    // The audit trail folded the note, and its reads go on.
    let auditor = api.login("auditor@demo.example").await;
    let changes = api.get(&auditor, "/api/audit/changes?limit=1").await;
    assert_eq!(changes.status, 200);
    assert_eq!(changes.body["items"][0]["event_type"], "LeadNoteAdded");
}

/// `crm rebuild` in another process empties the projections and folds them again
/// while this server serves: a read made meanwhile waits for what it reads to be
/// folded again (this server helps), and never answers from an emptied table.
async fn a_rebuild_by_another_process_never_hides_an_acknowledged_write(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let agent = s.agent1.ctx.clone();
    // More than one of the rebuild's batches (1,000 events each).
    let mut last = None;
    for i in 0..1_100 {
        last = Some(lead_of(&app, &agent, &format!("Lead {i}")).await);
    }
    let last = last.unwrap();
    app.lead_row(&agent, last).await.unwrap();

    let other = db.store().await;
    let rebuilder = crm_projections::Projector::open(other, crm_projections::all())
        .await
        .unwrap();
    let names = rebuilder.names();
    // The reads start once the rebuild has emptied the projections and folded
    // its first batch: the last lead is then gone from the tables.
    let (progress, mut first_batch) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn({
        let app = app.clone();
        async move {
            first_batch.recv().await;
            let mut answers = Vec::new();
            for _ in 0..20 {
                answers.push(app.lead_row(&agent, last).await.map(|lead| lead.name));
            }
            answers
        }
    });
    rebuilder
        .rebuild(&names, &move |position| {
            let _ = progress.send(position);
        })
        .await
        .unwrap();
    for answer in reader.await.unwrap() {
        assert_eq!(answer.unwrap().as_deref(), Some("Lead 1099"));
    }
}

/// On PostgreSQL a fold waits for a lock at most 10 s: a projection's table
/// locked by someone else makes the reads that need a fold answer that the
/// service is unavailable, rather than wait for good, and the appends go on.
/// (SQLite's equivalent is its busy timeout, 30 s, and is not run here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_projection_table_makes_reads_unavailable_not_stuck() {
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let app = app(&db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let agent = s.agent1.ctx.clone();
    lead_of(&app, &agent, "First").await;
    app.settle().await.unwrap();
    let mut locker = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&db.url).await.unwrap()
    };
    sqlx::raw_sql("BEGIN; LOCK TABLE leads_view IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    lead_of(&app, &agent, "Second").await;
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        app.users_list(&s.admin.ctx, None, 50),
    )
    .await
    .expect("the read answers");
    assert!(
        matches!(read, Err(AppError::Store(StoreError::Unavailable(_)))),
        "{read:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    app.settle().await.unwrap();
    assert_eq!(
        app.lead_row(&agent, lead_of(&app, &agent, "Third").await)
            .await
            .unwrap()
            .name,
        Some("Third".to_owned())
    );
    db.remove().await;
}

/// Appends are acknowledged before they are folded; once they pause, the
/// projector folds what waits by itself: no read asks it, and `/healthz` (which
/// reads the checkpoints, not the projections) sees every projection reach the
/// head.
async fn once_appends_pause_the_projections_reach_the_head_with_no_read(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Dana Whitfield").await;
    let mut written = None;
    for stage in [Stage::Contacted, Stage::Nurture, Stage::Closed] {
        let edit = LeadEdit {
            stage: Some(stage),
            ..LeadEdit::default()
        };
        written = Some(
            app.edit_lead(&s.agent1.ctx, lead, edit, None)
                .await
                .unwrap(),
        );
    }
    let head = written.unwrap().position;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let health = app.health().await.unwrap();
        assert_eq!(health.head, head, "nothing else was appended");
        if health.projections.iter().all(|p| p.position == head) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projections never reached the head: {:?}",
            health.projections
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn exec(app: &App, sql: &str) {
    crm_events::on_pool!(app.store().database(), |pool| {
        sqlx::query(sql).execute(pool).await.unwrap();
    });
}
