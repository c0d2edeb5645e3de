//! Trust at the edges, on both backends: endings recorded when they happen (with
//! no request, once however many servers), bodies that are not JSON objects, the
//! `Bearer` scheme in any case, problems from routing, auditors who change nothing.

mod support;

use axum::body::Body;
use axum::http::{Method, Request};
use chrono::Duration;
use crm::app::{App, Clock};
use crm_events::backend_tests;
use crm_events::catalog::impersonation::ImpersonationEnded;
use crm_events::catalog::values::EndReason;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::ids::ImpersonationId;
use crm_events::testing::TestDatabase;
use crm_events::{DomainEvent, Position};
use serde_json::json;
use support::http::{demo, Api};
use support::*;

/// The ends recorded for impersonation `id`.
async fn ends_of(app: &App, id: ImpersonationId) -> Vec<ImpersonationEnded> {
    events_after(app, Position::START)
        .await
        .iter()
        .filter(|e| e.stream.id == id.as_uuid())
        .filter_map(|e| match DomainEvent::decode(e).unwrap() {
            DomainEvent::ImpersonationEnded(end) => Some(end),
            _ => None,
        })
        .collect()
}

/// Waits, up to `seconds` of real time, until `id` has an end recorded.
async fn ended_within(app: &App, id: ImpersonationId, seconds: u64) -> Vec<ImpersonationEnded> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let ends = ends_of(app, id).await;
        if !ends.is_empty() || std::time::Instant::now() >= until {
            return ends;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn an_expired_impersonation_is_recorded_at_its_expiry_with_no_request_once_by_two_servers(
    db: &TestDatabase,
) {
    // Two servers on one database, with one movable clock.
    let clock = Clock::system();
    let first = App::start(db.store().await, clock.clone()).await.unwrap();
    let second = App::start(db.store().await, clock.clone()).await.unwrap();
    let s = site(&first, "Demo Realty", "demo.example").await;
    let watchers = [
        first.watch_endings(std::time::Duration::from_millis(200)),
        second.watch_endings(std::time::Duration::from_millis(200)),
    ];
    let (acting, _) = first
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Fix the phone"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    let id = acting.impersonation().unwrap();
    let started =
        DomainEvent::decode(&events_after(&first, Position::START).await.pop().unwrap()).unwrap();
    let DomainEvent::ImpersonationStarted(started) = started else {
        panic!("{started:?}")
    };

    // Nobody makes a request: the servers notice the expiry by themselves.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(ends_of(&first, id).await.is_empty(), "not before its time");
    clock.advance(Duration::minutes(61));
    let ends = ended_within(&second, id, 5).await;
    assert_eq!(
        ends,
        [ImpersonationEnded {
            end_reason: EndReason::Expired,
            ended_at: started.expires_at,
        }]
    );
    // Both servers keep looking, and race on purpose: still exactly one end.
    let (a, b) = tokio::join!(first.record_due_endings(), second.record_due_endings());
    a.unwrap();
    b.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(ends_of(&first, id).await.len(), 1);
    for watcher in watchers {
        watcher.abort();
    }

    // The auditor and the agent see it ended; the admin's next request acts as
    // the admin, and records nothing more.
    let api = Api::new(second.clone());
    let sessions = api.get(&s.auditor.token, "/api/audit/impersonations").await;
    assert_eq!(sessions.body["items"][0]["id"], id.to_string());
    assert_eq!(sessions.body["items"][0]["end_reason"], "expired");
    assert!(sessions.body["items"][0]["ended_at"].is_string());
    let mine = api.get(&s.agent1.token, "/api/me/impersonations").await;
    assert_eq!(mine.body["items"][0]["end_reason"], "expired");
    let me = api.get(&s.admin.token, "/api/me").await;
    assert_eq!(me.body["user"]["id"], s.admin.id.to_string());
    assert!(me.body["impersonation"].is_null());
    assert_eq!(ends_of(&first, id).await.len(), 1);
}

async fn deactivating_or_demoting_records_revoked_at_once_and_a_restart_keeps_it(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
    let owner = &s.owner.token;
    let users = format!("/api/users/{}", s.admin.id);
    let end_of = |id: ImpersonationId| {
        let api = api.clone();
        let owner = owner.clone();
        async move {
            let session = api
                .get(&owner, &format!("/api/audit/impersonations/{id}"))
                .await;
            (
                session.body["end_reason"].as_str().map(str::to_owned),
                session.body["ended_at"].is_string(),
            )
        }
    };

    // The admin deactivated while logged in as the agent.
    let (acting, _) = api
        .app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    let deactivated = acting.impersonation().unwrap();
    let reply = api
        .patch(owner, &users, json!({"active": false}), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(end_of(deactivated).await, (Some("revoked".into()), true));
    api.patch(owner, &users, json!({"active": true}), None)
        .await;
    let admin = login(&api.app, "admin@demo.example").await;

    // The agent deactivated while an admin is logged in as them.
    let (acting, _) = api
        .app
        .start_impersonation(
            &admin.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    let agent_gone = acting.impersonation().unwrap();
    let agent = format!("/api/users/{}", s.agent1.id);
    api.patch(owner, &agent, json!({"active": false}), None)
        .await;
    assert_eq!(end_of(agent_gone).await, (Some("revoked".into()), true));
    api.patch(owner, &agent, json!({"active": true}), None)
        .await;

    // The admin demoted to agent while logged in as the agent.
    let (acting, _) = api
        .app
        .start_impersonation(
            &admin.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    let demoted = acting.impersonation().unwrap();
    api.patch(owner, &users, json!({"role": "agent"}), None)
        .await;
    assert_eq!(end_of(demoted).await, (Some("revoked".into()), true));

    // Each was recorded once, and a restart shows the same.
    for id in [deactivated, agent_gone, demoted] {
        assert_eq!(ends_of(&api.app, id).await.len(), 1);
    }
    let restarted = Api::new(App::start(db.store().await, Clock::system()).await.unwrap());
    let sessions = restarted.get(owner, "/api/audit/impersonations").await;
    let items = sessions.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{}", sessions.body);
    for item in items {
        assert_eq!(item["end_reason"], "revoked", "{item}");
        assert!(item["ended_at"].is_string(), "{item}");
    }
}

backend_tests!(
    an_expired_impersonation_is_recorded_at_its_expiry_with_no_request_once_by_two_servers,
    deactivating_or_demoting_records_revoked_at_once_and_a_restart_keeps_it,
    acting_as_refuses_a_request_meant_for_an_agent_once_the_impersonation_ended,
    a_write_in_flight_when_the_impersonation_ends_commits_nothing,
    a_kept_answer_is_given_only_to_a_session_that_may_still_make_the_request,
    the_server_watches_its_chain_and_a_break_shows_in_health_and_on_audit_responses,
    a_removed_tail_is_found_by_the_next_round,
    a_change_to_events_verified_before_is_found_by_a_later_round,
    a_body_that_is_not_a_json_object_is_refused_and_changes_nothing,
    the_bearer_scheme_is_case_insensitive,
    routing_answers_404_and_405_with_problems,
    auditors_change_nothing_but_their_password,
);

async fn acting_as_refuses_a_request_meant_for_an_agent_once_the_impersonation_ended(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
    let admin = &s.admin.token;
    let agent_id = s.agent1.id.to_string();
    let lead = api
        .post(&s.agent1.token, "/api/leads", json!({"name": "Dana Novak"}))
        .await;
    let path = format!("/api/leads/{}", lead.id());
    let as_agent = [("acting-as", agent_id.as_str())];
    let patch = |phone: &'static str, headers: Vec<(&'static str, String)>| {
        let api = api.clone();
        let admin = admin.clone();
        let path = path.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            api.call(
                Method::PATCH,
                &path,
                Some(&admin),
                Some(&json!({ "phone": phone })),
                &headers,
            )
            .await
        }
    };
    let acting = api
        .post(
            admin,
            "/api/impersonation",
            json!({"user_id": agent_id, "reason": "Fix the phone"}),
        )
        .await;
    assert_eq!(acting.status, 200, "{}", acting.body);
    let expires_at = acting.body["impersonation"]["expires_at"].clone();
    let ok = patch("+1 555 0101", vec![("acting-as", agent_id.clone())]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let me = api
        .call(Method::GET, "/api/me", Some(admin), None, &as_agent)
        .await;
    assert_eq!(me.status, 200);

    // The impersonation expires; the admin's next write still means the agent's.
    api.app.clock().advance(Duration::minutes(61));
    let before = head(&api.app).await;
    let late = patch("+1 555 0102", vec![("acting-as", agent_id.clone())]).await;
    late.problem(409, "impersonation_ended");
    assert_eq!(late.body["end_reason"], "expired");
    assert_eq!(
        late.body["ended_at"]
            .as_str()
            .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
        expires_at.as_str().map(|t| t.parse().unwrap()),
    );
    // Only the end was recorded; the lead is as the agent's session left it.
    let appended: Vec<_> = events_after(&api.app, before)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(appended, ["ImpersonationEnded"]);
    let read = api.get(&s.agent1.token, &path).await;
    assert_eq!(read.body["phone"], "+1 555 0101");
    // The same request again: still refused, nothing more recorded.
    let again = patch("+1 555 0102", vec![("acting-as", agent_id.clone())]).await;
    again.problem(409, "impersonation_ended");
    assert_eq!(head(&api.app).await.0, before.0 + 1);

    // Acting as oneself is what a session outside any impersonation does.
    let own = patch("+1 555 0103", vec![("acting-as", s.admin.id.to_string())]).await;
    assert_eq!(own.status, 200, "{}", own.body);
    // Never logged in as that user: a plain conflict.
    patch("+1 555 0104", vec![("acting-as", s.agent2.id.to_string())])
        .await
        .problem(409, "conflict");
    patch("+1 555 0104", vec![("acting-as", "agent1".to_owned())])
        .await
        .problem(422, "validation");

    // Returned to admin: the end says so.
    api.post(
        admin,
        "/api/impersonation",
        json!({"user_id": agent_id, "reason": "Again"}),
    )
    .await;
    api.delete(admin, "/api/impersonation").await;
    let returned = patch("+1 555 0105", vec![("acting-as", agent_id.clone())]).await;
    returned.problem(409, "impersonation_ended");
    assert_eq!(returned.body["end_reason"], "returned");
    // A session acting as the agent cannot claim to be the admin either.
    api.post(
        admin,
        "/api/impersonation",
        json!({"user_id": agent_id, "reason": "Once more"}),
    )
    .await;
    patch("+1 555 0106", vec![("acting-as", s.admin.id.to_string())])
        .await
        .problem(409, "conflict");
    let read = api.get(&s.agent1.token, &path).await;
    assert_eq!(read.body["phone"], "+1 555 0103");
}

/// Changes the log behind the server's back, as someone with the database's
/// keys would (the append-only triggers switched off first).
async fn tamper(app: &App, sql: &str) {
    let off = match app.store().database().backend_name() {
        "sqlite" => "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;",
        _ => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    crm_events::on_pool!(app.store().database(), |pool| sqlx::raw_sql(&format!(
        "{off} {sql}"
    ))
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
}

async fn health_of(api: &Api) -> serde_json::Value {
    api.call(Method::GET, "/healthz", None, None, &[])
        .await
        .body
}

async fn the_server_watches_its_chain_and_a_break_shows_in_health_and_on_audit_responses(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
    let first = api.app.check_chain().await.unwrap();
    let head = head(&api.app).await.0;
    assert_eq!((first.ok, first.checked_to), (true, head));
    let health = health_of(&api).await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["chain"]["checked_to"], head);
    let audit = api.get(&s.auditor.token, "/api/audit/changes").await;
    assert_eq!(audit.header("x-chain-intact"), Some("true"));

    // The next round reads only what came since.
    lead_of(&api.app, &s.agent1.ctx, "Checked later").await;
    let later = api.app.check_chain().await.unwrap();
    assert_eq!(later.checked_to, head + 1);

    // An event appended since the last round is altered: the next round finds it.
    lead_of(&api.app, &s.agent1.ctx, "Altered").await;
    api.app.settle().await.unwrap();
    let altered = head + 2;
    tamper(
        &api.app,
        &format!(
            "UPDATE events SET payload = replace(payload, 'buyer', 'seller') \
             WHERE position = {altered};"
        ),
    )
    .await;
    let broken = api.app.check_chain().await.unwrap();
    assert_eq!(
        (broken.ok, broken.first_bad_position),
        (false, Some(altered))
    );
    let health = health_of(&api).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["chain"]["first_bad_position"], altered);
    for path in [
        "/api/audit/changes",
        "/api/audit/impersonations",
        "/api/audit/verify",
    ] {
        let reply = api.get(&s.auditor.token, path).await;
        assert_eq!(reply.header("x-chain-intact"), Some("false"), "{path}");
    }
    // Other pages are served as before, without the header.
    let leads = api.get(&s.agent1.token, "/api/leads").await;
    assert_eq!((leads.status, leads.header("x-chain-intact")), (200, None));

    // A server started on a log altered earlier finds it in its first round.
    let restarted = Api::new(App::start(db.store().await, Clock::system()).await.unwrap());
    assert_eq!(
        health_of(&restarted).await["status"],
        "ok",
        "not checked yet"
    );
    let found = restarted.app.check_chain().await.unwrap();
    assert_eq!(found.first_bad_position, Some(altered));
    assert_eq!(health_of(&restarted).await["status"], "degraded");
}

/// The last events removed, with the head left as it was: the next round says
/// the log stops short.
async fn a_removed_tail_is_found_by_the_next_round(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    api.app.check_chain().await.unwrap();
    let head = head(&api.app).await.0;
    for i in 0..3 {
        lead_of(&api.app, &s.agent1.ctx, &format!("Removed {i}")).await;
    }
    tamper(
        &api.app,
        &format!("DELETE FROM events WHERE position > {};", head + 1),
    )
    .await;
    let found = api.app.check_chain().await.unwrap();
    assert_eq!(
        (found.ok, found.first_bad_position),
        (false, Some(head + 2))
    );
}

/// A request authenticated while logged in as the agent, whose write reaches the
/// store after the impersonation ended or lost its right: it commits nothing, and
/// says why. (The session is checked in the write's own transaction.)
async fn a_write_in_flight_when_the_impersonation_ends_commits_nothing(db: &TestDatabase) {
    use crm::app::AppError;
    use crm::domain::site::SiteSettingsEdit;
    use crm_events::catalog::values::Role;

    let (api, s) = demo(db).await;
    let app = &api.app;
    let lead = lead_of(app, &s.agent1.ctx, "Dana Novak").await;
    let note = |ctx: crm::app::RequestContext| async move {
        app.add_note(
            &ctx,
            lead,
            crm::domain::values::NoteBody::parse("written late").unwrap(),
        )
        .await
    };
    let owner = s.owner.ctx.clone();
    for case in [
        "returned",
        "agent deactivated",
        "admin demoted",
        "switched off",
    ] {
        let admin = login(app, "admin@demo.example").await;
        let (acting, _) = app
            .start_impersonation(
                &admin.ctx,
                s.agent1.id,
                reason("Help"),
                ImpersonationMode::Edit,
            )
            .await
            .unwrap();
        // Authenticated now, written after the end.
        match case {
            "returned" => drop(app.return_to_admin(&acting).await.unwrap()),
            "agent deactivated" => drop(
                app.update_user(&owner, s.agent1.id, None, Some(false), None)
                    .await
                    .unwrap(),
            ),
            "admin demoted" => drop(
                app.update_user(&owner, s.admin.id, Some(Role::Agent), None, None)
                    .await
                    .unwrap(),
            ),
            _ => {
                let off = SiteSettingsEdit {
                    enabled: Some(false),
                    ..Default::default()
                };
                app.change_site_settings(&owner, off, None).await.unwrap();
            }
        }
        let before = head(app).await;
        let error = note(acting.clone()).await.unwrap_err();
        assert!(
            matches!(
                error,
                AppError::ImpersonationEnded { .. } | AppError::Conflict(_)
            ),
            "{case}: {error:?}"
        );
        if case == "returned" {
            assert!(
                matches!(error, AppError::ImpersonationEnded { .. }),
                "{error:?}"
            );
        }
        assert_eq!(head(app).await, before, "{case}: nothing was appended");
        // Put things back for the next case.
        app.update_user(&owner, s.agent1.id, None, Some(true), None)
            .await
            .unwrap();
        app.update_user(&owner, s.admin.id, Some(Role::Admin), None, None)
            .await
            .unwrap();
        let on = SiteSettingsEdit {
            enabled: Some(true),
            ..Default::default()
        };
        app.change_site_settings(&owner, on, None).await.unwrap();
    }
}

/// The rounds also verify the log again from the start, a slice at a time: an
/// event verified long ago and changed since is found while the server runs, and
/// so is a break a full verification asked for finds.
async fn a_change_to_events_verified_before_is_found_by_a_later_round(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    api.app.check_chain().await.unwrap();
    api.app.check_chain().await.unwrap();
    tamper(
        &api.app,
        "UPDATE events SET payload = replace(payload, 'Demo Realty', 'Forged Realty') \
         WHERE position = 1;",
    )
    .await;
    let found = api.app.check_chain().await.unwrap();
    assert_eq!((found.ok, found.first_bad_position), (false, Some(1)));
    assert_eq!(health_of(&api).await["status"], "degraded");

    // Another server, before its first round: the verification asked for finds
    // it, and the server's status says so from then on.
    let other = Api::new(App::start(db.store().await, Clock::system()).await.unwrap());
    assert_eq!(health_of(&other).await["status"], "ok");
    let verify = other.get(&s.auditor.token, "/api/audit/verify").await;
    assert_eq!(verify.body["ok"], false, "{}", verify.body);
    let health = health_of(&other).await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["chain"]["first_bad_position"], 1);
    let changes = other.get(&s.auditor.token, "/api/audit/changes").await;
    assert_eq!(changes.header("x-chain-intact"), Some("false"));
}

async fn a_kept_answer_is_given_only_to_a_session_that_may_still_make_the_request(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
    let lead = lead_of(&api.app, &s.agent1.ctx, "Dana Novak").await;
    let path = format!("/api/leads/{lead}/notes");
    let note = |token: &str, key: &str, acting_as: Option<String>| {
        let mut request = Request::post(&path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("idempotency-key", key);
        if let Some(id) = acting_as {
            request = request.header("acting-as", id);
        }
        request.body(Body::from(r#"{"body": "kept"}"#)).unwrap()
    };

    // Signed out: the answer kept for the key is not given again.
    let agent = login(&api.app, "agent1@demo.example").await;
    assert_eq!(api.send(note(&agent.token, "k1", None)).await.status, 201);
    let again = api.send(note(&agent.token, "k1", None)).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    api.post(&agent.token, "/api/logout", json!({})).await;
    api.send(note(&agent.token, "k1", None))
        .await
        .problem(401, "unauthenticated");

    // Returned to admin: a replay acting as the agent is told the impersonation ended.
    let admin = login(&api.app, "admin@demo.example").await;
    api.post(
        &admin.token,
        "/api/impersonation",
        json!({"user_id": s.agent1.id, "reason": "Help"}),
    )
    .await;
    let agent_id = s.agent1.id.to_string();
    let first = api
        .send(note(&admin.token, "k2", Some(agent_id.clone())))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    api.delete(&admin.token, "/api/impersonation").await;
    api.send(note(&admin.token, "k2", Some(agent_id)))
        .await
        .problem(409, "impersonation_ended");

    // A request that needs no session is not refused for an old token.
    let signin = api
        .send(
            Request::post("/api/login")
                .header("authorization", format!("Bearer {}", agent.token))
                .header("content-type", "application/json")
                .header("idempotency-key", "k3")
                .body(Body::from(
                    json!({"email": "agent1@demo.example", "password": PASSWORD}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(signin.status, 200, "{}", signin.body);
}

async fn a_body_that_is_not_a_json_object_is_refused_and_changes_nothing(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let lead = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "Dana Novak", "email": "dana@example.com", "phone": "+1 555 0100"}),
        )
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    let path = format!("/api/leads/{}", lead.id());
    let before = head(&api.app).await;

    // Fields by position would clear email and phone: an array is no object.
    for body in [
        json!(["x", null, null, "y"]),
        json!("Dana"),
        json!(42),
        json!(null),
    ] {
        api.patch(&agent, &path, body, None)
            .await
            .problem(422, "validation");
    }
    let signin = api
        .call(
            Method::POST,
            "/api/login",
            None,
            Some(&json!(["agent1@demo.example", PASSWORD])),
            &[],
        )
        .await;
    signin.problem(422, "validation");
    assert!(signin.body.get("token").is_none());
    assert_eq!(head(&api.app).await, before, "nothing was appended");
    let read = api.get(&agent, &path).await;
    assert_eq!(read.body["email"], "dana@example.com");
    assert_eq!(read.body["phone"], "+1 555 0100");

    // An object with space before it is still an object.
    let ok = api
        .call(
            Method::PATCH,
            &path,
            Some(&agent),
            None,
            &[("content-type", "application/json")],
        )
        .await;
    ok.problem(422, "validation");
    let request = Request::builder()
        .method(Method::PATCH)
        .uri(&path)
        .header("authorization", format!("Bearer {agent}"))
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from("\n  {\"stage\": \"contacted\"}"))
        .unwrap();
    let reply = api.send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["stage"], "contacted");
}

async fn the_bearer_scheme_is_case_insensitive(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let request = Request::builder()
            .uri("/api/me")
            .header("authorization", format!("{scheme} {}", s.agent1.token))
            .body(Body::empty())
            .unwrap();
        let reply = api.send(request).await;
        assert_eq!(reply.status, 200, "{scheme}: {}", reply.body);
        assert_eq!(reply.body["user"]["id"], s.agent1.id.to_string());
    }
    for value in [
        format!("Basic {}", s.agent1.token),
        format!("Bearer{}", s.agent1.token),
        "Bearer ".to_owned(),
    ] {
        let request = Request::builder()
            .uri("/api/me")
            .header("authorization", value.clone())
            .body(Body::empty())
            .unwrap();
        api.send(request).await.problem(401, "unauthenticated");
    }
}

async fn routing_answers_404_and_405_with_problems(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    api.get(&s.admin.token, "/api/no-such-thing")
        .await
        .problem(404, "not_found");
    let reply = api
        .call(
            Method::PUT,
            "/api/leads",
            Some(&s.admin.token),
            Some(&json!({})),
            &[],
        )
        .await;
    reply.problem(405, "method_not_allowed");
    api.call(Method::DELETE, "/api/me", Some(&s.admin.token), None, &[])
        .await
        .problem(405, "method_not_allowed");
}

async fn auditors_change_nothing_but_their_password(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let auditor = &s.auditor.token;
    let before = head(&api.app).await;
    api.patch(
        auditor,
        "/api/settings",
        json!({"timezone": "Europe/Paris"}),
        None,
    )
    .await
    .problem(403, "forbidden");
    api.post(
        auditor,
        "/api/templates",
        json!({"kind": "text", "name": "Hello", "body": "Hi there"}),
    )
    .await
    .problem(403, "forbidden");
    api.post(auditor, "/api/leads", json!({"name": "Nobody"}))
        .await
        .problem(403, "forbidden");
    assert_eq!(head(&api.app).await, before, "nothing was appended");
    // Reading their own settings, and changing their password, they may.
    assert_eq!(api.get(auditor, "/api/settings").await.status, 200);
    assert_eq!(api.get(auditor, "/api/templates").await.status, 200);
    let changed = api
        .post(
            auditor,
            "/api/me/password",
            json!({"current_password": PASSWORD, "new_password": "another-long-password"}),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.body);
}
