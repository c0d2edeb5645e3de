//! Nothing beside the log changes without its event, on both backends: every
//! command that writes credentials or sessions writes them in the transaction
//! that appends its event. With a failure injected into the append, the rows are
//! unchanged; with a failure injected into the rows, nothing is appended; with the
//! request dropped at each of its await points, both happen or neither.

mod support;

use crm_events::catalog::values::ImpersonationMode;
use std::future::Future;
use std::task::Poll;

use crm::app::{App, AppError};
use crm::domain::values::{Email, Password, PersonName};
use crm_events::backend_tests;
use crm_events::catalog::values::Role;
use crm_events::ids::{CorrelationId, UserId};
use crm_events::testing::TestDatabase;
use crm_events::{on_pool, Position};
use support::*;

backend_tests!(
    a_failed_append_leaves_credentials_and_sessions_untouched,
    a_refused_row_beside_the_log_appends_nothing,
    a_request_dropped_at_any_await_point_writes_both_or_neither,
    a_write_dropped_at_any_await_point_and_retried_with_its_key_lands_once,
);

/// Runs `sql` as it is (trigger definitions included). On SQLite a read comes
/// first: a connection prepares DDL against the schema it last read, and only a
/// read makes it look again after another connection changed it.
async fn exec(app: &App, sql: &str) {
    let sql = match app.store().database().backend_name() {
        "sqlite" => format!("SELECT count(*) FROM sqlite_master; {sql}"),
        _ => sql.to_owned(),
    };
    on_pool!(app.store().database(), |pool| sqlx::raw_sql(&sql)
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
}

/// Makes every write of `operation` (`INSERT` or `UPDATE`) on `table` fail, or
/// only the inserts of events of `event_type` into `events`.
async fn inject_failure(app: &App, table: &str, operation: &str, event_type: Option<&str>) {
    let sqlite = app.store().database().backend_name() == "sqlite";
    let when = match (event_type, sqlite) {
        (Some(kind), true) => format!("WHEN NEW.event_type = '{kind}'"),
        (Some(kind), false) => format!("WHEN (NEW.event_type = '{kind}')"),
        (None, _) => String::new(),
    };
    let sql = if sqlite {
        format!(
            "CREATE TRIGGER injected_failure BEFORE {operation} ON {table} {when} \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        )
    } else {
        format!(
            "CREATE OR REPLACE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER injected_failure BEFORE {operation} ON {table} FOR EACH ROW {when} \
             EXECUTE FUNCTION injected_failure();"
        )
    };
    exec(app, &sql).await;
}

async fn remove_failure(app: &App, table: &str) {
    let sql = match app.store().database().backend_name() {
        "sqlite" => "DROP TRIGGER injected_failure;".to_owned(),
        _ => format!("DROP TRIGGER injected_failure ON {table};"),
    };
    exec(app, &sql).await;
}

/// What lives beside the log about `user`: the password hash, and each session
/// with whether it ended and the impersonation it holds.
async fn beside_the_log(app: &App, user: UserId) -> (Option<String>, Vec<String>) {
    let db = app.store().database();
    let hash: Option<(String,)> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT password_hash FROM credentials WHERE user_id = $1"
    )
    .bind(user.as_uuid())
    .fetch_optional(pool)
    .await
    .unwrap());
    let sessions: Vec<(Vec<u8>, bool, Option<uuid::Uuid>)> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT token_hash, ended_at IS NOT NULL, impersonation_id FROM sessions \
         WHERE user_id = $1 ORDER BY token_hash"
    )
    .bind(user.as_uuid())
    .fetch_all(pool)
    .await
    .unwrap());
    (
        hash.map(|(h,)| h),
        sessions
            .into_iter()
            .map(|(token, ended, held)| format!("{}:{ended}:{held:?}", hex::encode(token)))
            .collect(),
    )
}

/// How many events of `event_type` the log holds.
async fn count(app: &App, event_type: &str) -> usize {
    events_after(app, Position::START)
        .await
        .iter()
        .filter(|e| e.event_type == event_type)
        .count()
}

/// The owner creates an agent.
async fn new_agent(app: &App, s: &Site, name: &str, email: &str) -> Result<(), AppError> {
    app.create_user(
        &s.owner.ctx,
        PersonName::parse(name).unwrap(),
        Email::parse(email).unwrap(),
        Role::Agent,
        Password::parse(PASSWORD).unwrap(),
    )
    .await
    .map(drop)
}

fn new_password() -> Password {
    Password::parse("a-brand-new-password").unwrap()
}

async fn a_failed_append_leaves_credentials_and_sessions_untouched(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let before = (
        beside_the_log(&app, s.agent1.id).await,
        beside_the_log(&app, s.admin.id).await,
    );
    let head_before = head(&app).await;

    inject_failure(&app, "events", "INSERT", Some("UserPasswordChanged")).await;
    app.change_password(&s.agent1.ctx, PASSWORD, new_password())
        .await
        .unwrap_err();
    remove_failure(&app, "events").await;

    inject_failure(&app, "events", "INSERT", Some("UserLoggedIn")).await;
    app.login("agent1@demo.example", PASSWORD, CorrelationId::generate())
        .await
        .unwrap_err();
    remove_failure(&app, "events").await;

    inject_failure(&app, "events", "INSERT", Some("UserLoggedOut")).await;
    app.logout(&s.agent1.ctx).await.unwrap_err();
    remove_failure(&app, "events").await;

    inject_failure(&app, "events", "INSERT", Some("ImpersonationStarted")).await;
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap_err();
    remove_failure(&app, "events").await;

    inject_failure(&app, "events", "INSERT", Some("UserDeactivated")).await;
    app.update_user(&s.owner.ctx, s.agent1.id, None, Some(false), None)
        .await
        .unwrap_err();
    remove_failure(&app, "events").await;

    inject_failure(&app, "events", "INSERT", Some("UserCreated")).await;
    let error = new_agent(&app, &s, "Never Made", "never@demo.example")
        .await
        .unwrap_err();
    remove_failure(&app, "events").await;
    assert!(matches!(error, AppError::Store(_)), "{error:?}");

    assert_eq!(head(&app).await, head_before, "nothing was appended");
    assert_eq!(
        (
            beside_the_log(&app, s.agent1.id).await,
            beside_the_log(&app, s.admin.id).await,
        ),
        before,
        "credentials and sessions are as they were"
    );
    // The email of the user never made is free: its credentials were not kept.
    new_agent(&app, &s, "Made Now", "never@demo.example")
        .await
        .unwrap();
    // The old password still signs in; the old sessions still work.
    login(&app, "agent1@demo.example").await;
    again(&app, &s.agent1).await;
}

async fn a_refused_row_beside_the_log_appends_nothing(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let head_before = head(&app).await;

    inject_failure(&app, "credentials", "UPDATE", None).await;
    app.change_password(&s.agent1.ctx, PASSWORD, new_password())
        .await
        .unwrap_err();
    remove_failure(&app, "credentials").await;

    inject_failure(&app, "credentials", "INSERT", None).await;
    new_agent(&app, &s, "Never Made", "never@demo.example")
        .await
        .unwrap_err();
    remove_failure(&app, "credentials").await;

    inject_failure(&app, "sessions", "INSERT", None).await;
    app.login("agent1@demo.example", PASSWORD, CorrelationId::generate())
        .await
        .unwrap_err();
    remove_failure(&app, "sessions").await;

    inject_failure(&app, "sessions", "UPDATE", None).await;
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap_err();
    app.logout(&s.agent2.ctx).await.unwrap_err();
    app.update_user(&s.owner.ctx, s.agent2.id, None, Some(false), None)
        .await
        .unwrap_err();
    remove_failure(&app, "sessions").await;

    assert_eq!(head(&app).await, head_before, "nothing was appended");

    // A taken email is refused as a conflict, appending nothing.
    let error = new_agent(&app, &s, "Twin", "agent1@demo.example")
        .await
        .unwrap_err();
    assert!(matches!(error, AppError::Conflict(_)), "{error:?}");
    // A session already in an impersonation cannot take up a second one, even
    // when the request was decided on an older view of it.
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap();
    let before_second = head(&app).await;
    let error = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent2.id,
            reason("Again"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, AppError::Conflict(_)), "{error:?}");
    assert_eq!(head(&app).await, before_second, "nothing was appended");
}

/// Polls `future` `polls` times at most, each time it is woken, and drops it if
/// it has not finished by then: the request cancelled at its `polls`-th await.
async fn dropped_after<F: Future>(polls: usize, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut polled = 0;
    std::future::poll_fn(|cx| {
        if polled == polls {
            return Poll::Ready(None);
        }
        polled += 1;
        future.as_mut().poll(cx).map(Some)
    })
    .await
}

/// Lets the writer finish whatever a dropped request sent it: the writer takes
/// requests in order, so once a later append is answered, the earlier ones are
/// done.
async fn after_the_writer(app: &App, s: &Site) {
    lead_of(app, &s.owner.ctx, "Barrier").await;
}

/// What a dropped request left: (cancelled and committed, cancelled and not).
#[derive(Debug, Default)]
struct Drops {
    committed: usize,
    not: usize,
}

impl Drops {
    fn saw(&mut self, event: bool, row: bool, what: &str, polls: usize) {
        assert_eq!(
            event, row,
            "{what} dropped at await {polls}: event {event}, row beside the log {row}"
        );
        if event {
            self.committed += 1;
        } else {
            self.not += 1;
        }
    }

    /// How many drops fell after the request reached the writer.
    fn committed(&self) -> usize {
        self.committed
    }
}

async fn a_request_dropped_at_any_await_point_writes_both_or_neither(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;

    // Changing the password.
    let mut drops = Drops::default();
    let mut current = PASSWORD.to_owned();
    for polls in 1.. {
        let next = format!("password-number-{polls}");
        let events = count(&app, "UserPasswordChanged").await;
        let hash = beside_the_log(&app, s.agent1.id).await.0;
        let ctx = again(&app, &s.agent1).await;
        let done = dropped_after(
            polls,
            app.change_password(&ctx, &current, Password::parse(&next).unwrap()),
        )
        .await;
        after_the_writer(&app, &s).await;
        let appended = count(&app, "UserPasswordChanged").await > events;
        let changed = beside_the_log(&app, s.agent1.id).await.0 != hash;
        if appended {
            current = next;
        }
        match done {
            Some(result) => {
                result.unwrap();
                assert!(appended && changed);
                break;
            }
            None => drops.saw(appended, changed, "a password change", polls),
        }
    }
    let mut committed = drops.committed();
    app.login("agent1@demo.example", &current, CorrelationId::generate())
        .await
        .unwrap();

    // "Log in as user", and "Return to Admin".
    let mut starts = Drops::default();
    let mut returns = Drops::default();
    for polls in 1.. {
        let ctx = again(&app, &s.admin).await;
        let events = count(&app, "ImpersonationStarted").await;
        let done = dropped_after(
            polls,
            app.start_impersonation(&ctx, s.agent1.id, reason("Help"), ImpersonationMode::Edit),
        )
        .await;
        after_the_writer(&app, &s).await;
        let appended = count(&app, "ImpersonationStarted").await > events;
        let acting = again(&app, &s.admin).await;
        let held = acting.impersonation().is_some();
        if done.is_none() {
            starts.saw(appended, held, "a start", polls);
        } else {
            assert!(appended && held);
        }
        if held {
            let events = count(&app, "ImpersonationEnded").await;
            let back = dropped_after(polls, app.return_to_admin(&acting)).await;
            after_the_writer(&app, &s).await;
            let ended = count(&app, "ImpersonationEnded").await > events;
            let released = again(&app, &s.admin).await.impersonation().is_none();
            match back {
                None => returns.saw(ended, released, "a return", polls),
                Some(result) => {
                    result.unwrap();
                    assert!(ended && released);
                }
            }
            if !released {
                app.return_to_admin(&again(&app, &s.admin).await)
                    .await
                    .unwrap();
            }
        }
        if done.is_some() {
            break;
        }
    }
    committed += starts.committed() + returns.committed();

    // Signing in.
    let mut drops = Drops::default();
    for polls in 1.. {
        let events = count(&app, "UserLoggedIn").await;
        let sessions = beside_the_log(&app, s.agent2.id).await.1.len();
        let done = dropped_after(
            polls,
            app.login("agent2@demo.example", PASSWORD, CorrelationId::generate()),
        )
        .await;
        after_the_writer(&app, &s).await;
        let appended = count(&app, "UserLoggedIn").await > events;
        let opened = beside_the_log(&app, s.agent2.id).await.1.len() > sessions;
        match done {
            Some(result) => {
                result.unwrap();
                assert!(appended && opened);
                break;
            }
            None => drops.saw(appended, opened, "a sign-in", polls),
        }
    }
    committed += drops.committed();

    // Signing out, each time a new session.
    let mut drops = Drops::default();
    for polls in 1.. {
        let session = login(&app, "agent2@demo.example").await;
        let events = count(&app, "UserLoggedOut").await;
        let done = dropped_after(polls, app.logout(&session.ctx)).await;
        after_the_writer(&app, &s).await;
        let appended = count(&app, "UserLoggedOut").await > events;
        let ended = app
            .authenticate(&session.token, CorrelationId::generate(), None)
            .await
            .is_err();
        match done {
            Some(result) => {
                result.unwrap();
                assert!(appended && ended);
                break;
            }
            None => drops.saw(appended, ended, "a sign-out", polls),
        }
    }
    committed += drops.committed();

    // Deactivating: the account's sessions end, and sign-ins stop, with the event.
    let mut drops = Drops::default();
    for polls in 1.. {
        let session = login(&app, "agent2@demo.example").await;
        let owner = again(&app, &s.owner).await;
        let events = count(&app, "UserDeactivated").await;
        let done = dropped_after(
            polls,
            app.update_user(&owner, s.agent2.id, None, Some(false), None),
        )
        .await;
        after_the_writer(&app, &s).await;
        let appended = count(&app, "UserDeactivated").await > events;
        let signed_out = beside_the_log(&app, s.agent2.id)
            .await
            .1
            .iter()
            .all(|row| row.contains(":true:"));
        let ended = app
            .authenticate(&session.token, CorrelationId::generate(), None)
            .await
            .is_err();
        assert_eq!(appended, ended, "deactivation dropped at await {polls}");
        if appended {
            app.update_user(&owner, s.agent2.id, None, Some(true), None)
                .await
                .unwrap();
        }
        match done {
            Some(result) => {
                result.unwrap();
                assert!(appended && signed_out);
                break;
            }
            None => drops.saw(appended, signed_out, "a deactivation", polls),
        }
    }
    committed += drops.committed();
    // Some drops fell after the request reached the writer: the caller was gone,
    // and the append and its rows committed together all the same.
    assert!(committed > 0, "no drop fell after an append was sent");
}

/// The answer a client never got: an HTTP write with an `Idempotency-Key` dropped
/// at each of its await points (a timeout, a client gone), then sent again with
/// the same key. Whether or not the first attempt committed (and whether or not
/// its answer was kept), the retry answers as a success and the note is in the
/// log exactly once: the store's record of the key commits with the events.
async fn a_write_dropped_at_any_await_point_and_retried_with_its_key_lands_once(db: &TestDatabase) {
    use axum::body::Body;
    use axum::http::Request;

    let (api, s) = support::http::demo(db).await;
    let lead = lead_of(&api.app, &s.agent1.ctx, "Dana Novak").await;
    let note = |key: &str| {
        Request::post(format!("/api/leads/{lead}/notes"))
            .header("authorization", format!("Bearer {}", s.agent1.token))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(format!(r#"{{"body": "note {key}"}}"#)))
            .unwrap()
    };
    let mut dropped_after_commit = 0;
    for polls in 1.. {
        let key = format!("retry-{polls}");
        let first = dropped_after(
            polls,
            tower::ServiceExt::oneshot(api.router.clone(), note(&key)),
        )
        .await;
        after_the_writer(&api.app, &s).await;
        let landed = count_notes(&api.app, &key).await;
        // The key is reserved for the session with the note, or not at all.
        assert_eq!(kept_keys(&api.app, &key).await, landed, "{key}");
        if first.is_none() && landed == 1 {
            dropped_after_commit += 1;
        }
        let retry = api.send(note(&key)).await;
        assert_eq!(retry.status, 201, "{key}: {}", retry.body);
        assert_eq!(retry.body["body"], format!("note {key}"));
        assert_eq!(count_notes(&api.app, &key).await, 1, "{key}: once");
        // Answered as the replay it is whenever the first attempt committed.
        assert_eq!(
            retry.header("idempotent-replayed") == Some("true"),
            landed == 1,
            "{key}"
        );
        let again = api.send(note(&key)).await;
        assert_eq!(
            (again.status, again.header("idempotent-replayed")),
            (201, Some("true"))
        );
        assert_eq!(again.body, retry.body);
        if first.is_some() {
            break;
        }
    }
    // Which await points fall after the commit depends on the scheduler (under
    // load, a whole path may run without pausing). So, whatever the loop saw:
    // attempts dropped the moment their note is in the log, their answer lost,
    // then retried.
    for attempt in 0..50 {
        let key = format!("lost-{attempt}");
        let request = tower::ServiceExt::oneshot(api.router.clone(), note(&key));
        if dropped_once_landed(&api.app, &key, request).await.is_some() {
            continue;
        }
        let retry = api.send(note(&key)).await;
        assert_eq!(retry.status, 201, "{key}: {}", retry.body);
        assert_eq!(retry.header("idempotent-replayed"), Some("true"), "{key}");
        assert_eq!(count_notes(&api.app, &key).await, 1, "{key}: once");
        dropped_after_commit += 1;
        break;
    }
    assert!(dropped_after_commit > 0, "some drops fell after the commit");
}

/// Polls `request` until its note is in the log, then drops it (its answer is
/// lost after the commit); its output if it finished first.
async fn dropped_once_landed<F: Future>(app: &App, key: &str, request: F) -> Option<F::Output> {
    let mut request = std::pin::pin!(request);
    loop {
        let polled = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
        if let Poll::Ready(output) = polled {
            return Some(output);
        }
        if count_notes(app, key).await == 1 {
            return None;
        }
        tokio::task::yield_now().await;
    }
}

/// Rows of `http_idempotency` for `key`.
async fn kept_keys(app: &App, key: &str) -> usize {
    let n: i64 = on_pool!(app.store().database(), |pool| sqlx::query_scalar(
        "SELECT count(*) FROM http_idempotency WHERE key = $1"
    )
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap());
    n as usize
}

async fn count_notes(app: &App, key: &str) -> usize {
    events_after(app, Position::START)
        .await
        .iter()
        .filter(|e| e.event_type == "LeadNoteAdded" && e.payload.contains(&format!("note {key}")))
        .count()
}
