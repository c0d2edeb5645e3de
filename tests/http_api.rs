//! The HTTP API on both backends: the README's walk-through, every endpoint, the
//! contract's errors (appending nothing), idempotency keys, the SSE stream, exports
//! and the OpenAPI document.

mod support;

use axum::body::Body;
use axum::http::{Method, Request};
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::http::demo;
use support::*;

backend_tests!(
    the_readme_walkthrough_works,
    every_endpoint_answers_as_the_contract_says,
    bad_requests_get_problems_and_append_nothing,
    a_retried_write_with_an_idempotency_key_returns_the_first_response,
    the_event_stream_resumes_after_last_event_id_without_gaps,
    the_audit_export_streams_csv_and_ndjson,
);

async fn the_readme_walkthrough_works(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let lead = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "Dana Whitfield", "phone": "+1 555 0100"}),
        )
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    // The request's id is the correlation id of the event it appended.
    let request_id = lead.header("x-request-id").unwrap().to_owned();
    let position = lead.body["position"].as_i64().unwrap();
    let appended = api
        .app
        .store()
        .read_all(crm_events::Position(position - 1), 1)
        .await
        .unwrap();
    assert_eq!(appended[0].correlation_id.to_string(), request_id);

    // Log in as the admin; list users.
    let admin = api.login("admin@demo.example").await;
    let users = api.get(&admin, "/api/users").await;
    assert_eq!(users.status, 200);
    let agent1 = users.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "agent1@demo.example")
        .unwrap();
    assert_eq!(agent1["can_impersonate"], true);
    // Log in as agent1 with a reason.
    let me = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": agent1["id"], "reason": "Fix Dana's phone number"}),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(
        (
            me.body["user"]["email"].as_str(),
            me.body["actor"]["email"].as_str()
        ),
        (Some("agent1@demo.example"), Some("admin@demo.example"))
    );
    let session = me.body["impersonation"]["id"].as_str().unwrap().to_owned();
    // Change a lead.
    let leads = api.get(&admin, "/api/leads").await;
    let dana = &leads.body["items"][0];
    let version = format!("\"{}\"", dana["version"]);
    let changed = api
        .patch(
            &admin,
            &format!("/api/leads/{}", dana["id"].as_str().unwrap()),
            json!({"phone": "+1 555 0199", "stage": "contacted"}),
            Some(&version),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["phone"], "+1 555 0199");
    // Return to admin.
    let back = api.delete(&admin, "/api/impersonation").await;
    assert_eq!(
        (back.status, back.body["impersonation"].clone()),
        (200, Value::Null)
    );
    // Read that session in the audit trail.
    let sessions = api.get(&admin, "/api/audit/impersonations").await;
    assert_eq!(sessions.body["items"][0]["id"], session.as_str());
    assert_eq!(sessions.body["items"][0]["end_reason"], "returned");
    // The admin and the subject come as users (API.md: `admin: User, subject: User`).
    let people = |body: &Value| {
        (
            body["admin"]["email"].clone(),
            body["admin"]["role"].clone(),
            body["subject"]["email"].clone(),
            body["subject"]["id"].clone(),
        )
    };
    let expected = (
        json!("admin@demo.example"),
        json!("admin"),
        json!("agent1@demo.example"),
        json!(s.agent1.id.to_string()),
    );
    assert_eq!(people(&sessions.body["items"][0]), expected);
    let detail = api
        .get(&admin, &format!("/api/audit/impersonations/{session}"))
        .await;
    assert_eq!(detail.status, 200);
    assert_eq!(people(&detail.body), expected);
    let agent1 = api.login("agent1@demo.example").await;
    let mine = api.get(&agent1, "/api/me/impersonations").await;
    assert_eq!(people(&mine.body["items"][0]), expected);
    let changes: Vec<(String, Value, Value)> = detail.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_owned(),
                c["before"].clone(),
                c["after"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (
                "phone".to_owned(),
                json!("+1 555 0100"),
                json!("+1 555 0199")
            ),
            ("stage".to_owned(), json!("new"), json!("contacted")),
        ]
    );
    assert_eq!(detail.body["admin_id"], s.admin.id.to_string());
    // What agent1's Lead Manager showed when the session started: the phone as it was.
    let started = detail.body["started_at"].as_str().unwrap();
    let then = api
        .get(
            &admin,
            &format!(
                "/api/audit/view/leads?subject_id={}&at={}",
                s.agent1.id,
                started.replace('+', "%2B").replace(':', "%3A")
            ),
        )
        .await;
    assert_eq!(then.status, 200, "{}", then.body);
    let dana_then = then.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == dana["id"])
        .cloned()
        .unwrap();
    assert_eq!(
        (dana_then["phone"].clone(), dana_then["stage"].clone()),
        (json!("+1 555 0100"), json!("new"))
    );

    // "View only": the lead reads as the agent sees it; a write is refused and
    // appends nothing; the session says its mode.
    let viewing = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Check what the agent sees", "mode": "view"}),
        )
        .await;
    assert_eq!(viewing.status, 200, "{}", viewing.body);
    assert_eq!(viewing.body["impersonation"]["mode"], "view");
    let dana_path = format!("/api/leads/{}", dana["id"].as_str().unwrap());
    let seen = api.get(&admin, &dana_path).await;
    assert_eq!(seen.body["phone"], "+1 555 0199");
    let head = api.app.store().head().await.unwrap();
    api.patch(&admin, &dana_path, json!({"stage": "nurture"}), None)
        .await
        .problem(403, "impersonation_read_only");
    assert_eq!(api.app.store().head().await.unwrap(), head);
    assert_eq!(api.get(&admin, &dana_path).await.body["stage"], "contacted");
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    let sessions = api.get(&admin, "/api/audit/impersonations").await;
    let modes: Vec<&Value> = sessions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["mode"])
        .collect();
    assert_eq!(modes, [&json!("view"), &json!("edit")]);
}

async fn every_endpoint_answers_as_the_contract_says(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let owner = api.login("owner@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let agent = api.login("agent1@demo.example").await;
    let auditor = api.login("auditor@demo.example").await;

    let me = api.get(&agent, "/api/me").await;
    assert_eq!(
        (
            me.status,
            me.body["user"]["role"].as_str(),
            me.body["impersonation"].clone()
        ),
        (200, Some("agent"), Value::Null)
    );
    let health = api
        .call(Method::GET, "/healthz", None, None, &[])
        .await
        .body;
    assert_eq!(
        (&health["status"], &health["chain"]),
        (
            &json!("ok"),
            &json!({"ok": true, "checked_to": 0, "first_bad_position": null})
        ),
        "the chain not verified yet: nothing found wrong so far"
    );
    // The read before settled the projections: each is at the head.
    let head = api.app.store().head().await.unwrap().0;
    let projections: Vec<(&str, i64, i64, bool)> = health["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["position"].as_i64().unwrap(),
                p["behind"].as_i64().unwrap(),
                p["stopped"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        projections,
        [
            "users",
            "lead_manager",
            "settings",
            "notifications",
            "audit_trail"
        ]
        .map(|name| (name, head, 0, true))
    );

    // Users and site settings.
    let created = api.post(&admin, "/api/users", json!({"name": "Nina New", "email": "nina@demo.example", "role": "agent", "password": "a-long-password"})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body["position"].as_i64().unwrap() > 0);
    let etag = created.header("etag").unwrap().to_owned();
    let nina = created.id();
    let patched = api
        .patch(
            &admin,
            &format!("/api/users/{nina}"),
            json!({"role": "auditor"}),
            Some(&etag),
        )
        .await;
    assert_eq!(
        (patched.status, patched.body["role"].as_str()),
        (200, Some("auditor"))
    );
    api.patch(
        &admin,
        &format!("/api/users/{nina}"),
        json!({"active": false}),
        Some(&etag),
    )
    .await
    .problem(409, "conflict");
    let settings = api.get(&admin, "/api/site/settings").await;
    assert_eq!(
        (
            settings.body["impersonation_max_minutes"].as_i64(),
            settings.header("etag")
        ),
        (Some(60), Some("\"1\""))
    );
    let changed = api
        .patch(
            &owner,
            "/api/site/settings",
            json!({"notify_subject_on_impersonation": true}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (
            changed.status,
            changed.body["notify_subject_on_impersonation"].as_bool()
        ),
        (200, Some(true))
    );
    api.patch(
        &admin,
        "/api/site/settings",
        json!({"impersonation_enabled": false}),
        None,
    )
    .await
    .problem(403, "forbidden");

    // The Lead Manager.
    let lead = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "Dana", "email": "dana@example.com", "tags": ["buyer"], "stage": "new"}),
        )
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    let lead_id = lead.id();
    let path = format!("/api/leads/{lead_id}");
    let note = api
        .post(
            &agent,
            &format!("{path}/notes"),
            json!({"body": "Call after 5"}),
        )
        .await;
    assert_eq!(
        (note.status, note.body["author_id"].as_str()),
        (201, Some(s.agent1.id.to_string().as_str()))
    );
    let task = api
        .post(
            &agent,
            &format!("{path}/tasks"),
            json!({"title": "Call back", "due_at": "2026-12-01T10:00:00Z"}),
        )
        .await;
    assert_eq!(
        (task.status, task.body["completed_at"].clone()),
        (201, Value::Null)
    );
    let done = api
        .post(
            &agent,
            &format!("{path}/tasks/{}/complete", task.id()),
            json!({}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body["completed_at"].is_string());
    let call = api
        .post(
            &agent,
            &format!("{path}/communications"),
            json!({"channel": "call", "direction": "outbound", "summary": "Left a voicemail"}),
        )
        .await;
    assert_eq!(call.status, 201, "{}", call.body);
    let detail = api.get(&agent, &path).await;
    assert_eq!(detail.status, 200);
    assert_eq!(
        (
            detail.body["notes"].as_array().unwrap().len(),
            detail.body["tasks"].as_array().unwrap().len()
        ),
        (1, 1)
    );
    assert_eq!(detail.body["communications"][0]["channel"], "call");
    assert!(detail.body["last_contacted_at"].is_string());
    let listed = api
        .get(
            &agent,
            "/api/leads?stage=new&tag=buyer&q=dan&sort=name&limit=10",
        )
        .await;
    assert_eq!(
        (
            listed.status,
            listed.body["items"].as_array().unwrap().len()
        ),
        (200, 1)
    );
    assert_eq!(listed.body["counts_by_stage"]["new"], 1);
    let everyone = api.get(&admin, "/api/leads?scope=site").await;
    assert_eq!(everyone.body["items"].as_array().unwrap().len(), 1);
    let assigned = api
        .post(
            &admin,
            &format!("{path}/assign"),
            json!({"agent_id": s.agent2.id}),
        )
        .await;
    assert_eq!(
        (assigned.status, assigned.body["assigned_agent_id"].as_str()),
        (200, Some(s.agent2.id.to_string().as_str()))
    );
    api.get(&agent, &path).await.problem(404, "not_found");
    let agent2 = api.login("agent2@demo.example").await;
    assert_eq!(api.delete(&agent2, &path).await.status, 204);
    api.get(&agent2, &path).await.problem(404, "not_found");

    // Settings and templates.
    let mine = api.get(&agent, "/api/settings").await;
    assert_eq!(
        (
            mine.body["settings"]["timezone"].as_str(),
            mine.body["version"].as_i64()
        ),
        (Some("UTC"), Some(0))
    );
    let set = api
        .patch(
            &agent,
            "/api/settings",
            json!({"timezone": "America/Denver", "communication.texting_enabled": true}),
            None,
        )
        .await;
    assert_eq!(
        (set.status, set.body["settings"]["timezone"].as_str()),
        (200, Some("America/Denver"))
    );
    let template = api
        .post(
            &agent,
            "/api/templates",
            json!({"kind": "email", "name": "Intro", "subject": "Hi", "body": "Hello {name}"}),
        )
        .await;
    assert_eq!(template.status, 201, "{}", template.body);
    let edited = api
        .patch(
            &agent,
            &format!("/api/templates/{}", template.id()),
            json!({"body": "Hi {name}"}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (
            edited.body["body"].as_str(),
            edited.body["version"].as_i64()
        ),
        (Some("Hi {name}"), Some(2))
    );
    assert_eq!(
        api.get(&agent, "/api/templates")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Stale versions are refused, and change nothing.
    let path = format!("/api/templates/{}", template.id());
    api.patch(&agent, &path, json!({"body": "Lost"}), Some("\"1\""))
        .await
        .problem(409, "conflict");
    let stale_delete = Request::delete(&path)
        .header("authorization", format!("Bearer {agent}"))
        .header("if-match", "\"1\"")
        .body(Body::empty())
        .unwrap();
    api.send(stale_delete).await.problem(409, "conflict");
    assert_eq!(
        api.get(&agent, "/api/templates").await.body[0]["body"],
        "Hi {name}"
    );
    let delete = Request::delete(&path)
        .header("authorization", format!("Bearer {agent}"))
        .header("if-match", "\"2\"")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(delete).await.status, 204);

    // Impersonation, notifications, who logged in as me, password.
    let started = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Check settings"}),
        )
        .await;
    assert_eq!(started.status, 200);
    api.post(
        &admin,
        "/api/impersonation",
        json!({"user_id": s.agent2.id, "reason": "Again"}),
    )
    .await
    .problem(409, "conflict");
    api.post(
        &admin,
        "/api/me/password",
        json!({"current_password": PASSWORD, "new_password": "another-password"}),
    )
    .await
    .problem(403, "impersonation_forbidden");
    api.get(&admin, "/api/audit/changes")
        .await
        .problem(403, "impersonation_forbidden");
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    api.delete(&admin, "/api/impersonation")
        .await
        .problem(409, "conflict");
    let told = api.get(&agent, "/api/me/notifications").await;
    assert_eq!(
        told.body["items"][0]["text"],
        "admin logged in as you: Check settings"
    );
    let who = api.get(&agent, "/api/me/impersonations").await;
    assert_eq!(who.body["items"][0]["reason"], "Check settings");
    let pw = api
        .post(
            &agent,
            "/api/me/password",
            json!({"current_password": PASSWORD, "new_password": "another-password"}),
        )
        .await;
    assert_eq!(pw.status, 204);
    assert!(pw.header("x-position").is_some());

    // Audit and events.
    let changes = api
        .get(
            &auditor,
            "/api/audit/changes?impersonated=false&entity_type=lead",
        )
        .await;
    assert_eq!(changes.status, 200);
    assert!(changes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["impersonation_id"].is_null() && c["entity_type"] == "lead"));
    let verify = api.get(&auditor, "/api/audit/verify").await;
    assert_eq!(
        (
            verify.body["ok"].as_bool(),
            verify.body["first_bad_position"].clone()
        ),
        (Some(true), Value::Null)
    );
    let events = api.get(&auditor, "/api/events?after=0&limit=5").await;
    assert_eq!(events.body["items"].as_array().unwrap().len(), 5);
    assert_eq!(events.body["items"][0]["position"], 1);
    assert!(events.body["items"][0]["hash"].as_str().unwrap().len() == 64);
    api.get(&agent, "/api/events")
        .await
        .problem(403, "forbidden");
    api.get(&agent, "/api/audit/impersonations")
        .await
        .problem(403, "forbidden");

    // Sign out.
    assert_eq!(
        api.call(Method::POST, "/api/logout", Some(&agent), None, &[])
            .await
            .status,
        204
    );
    api.get(&agent, "/api/me")
        .await
        .problem(401, "unauthenticated");
}

async fn bad_requests_get_problems_and_append_nothing(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let agent = api.login("agent1@demo.example").await;
    let lead = api
        .post(&agent, "/api/leads", json!({"name": "Dana"}))
        .await;
    let path = format!("/api/leads/{}", lead.id());
    let before = api.app.store().head().await.unwrap();

    api.call(Method::GET, "/api/me", None, None, &[])
        .await
        .problem(401, "unauthenticated");
    api.get("not-a-token", "/api/me")
        .await
        .problem(401, "unauthenticated");
    api.call(
        Method::POST,
        "/api/login",
        None,
        Some(&json!({"email": "admin@demo.example", "password": "wrong"})),
        &[],
    )
    .await
    .problem(401, "unauthenticated");
    let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
    let invalid = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "", "email": "nope", "stage": "won", "tags": many}),
        )
        .await;
    invalid.problem(422, "validation");
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "email", "stage", "tags"]);
    api.post(&agent, "/api/leads", json!({"name": "Eli", "price": 1}))
        .await
        .problem(422, "validation");
    api.post(&agent, "/api/leads", json!({"name": 5}))
        .await
        .problem(422, "validation");
    api.post(&agent, "/api/leads", json!(["not", "an", "object"]))
        .await
        .problem(422, "validation");
    let malformed = Request::post("/api/leads")
        .header("authorization", format!("Bearer {agent}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    api.send(malformed).await.problem(422, "validation");
    let huge = Request::post("/api/leads")
        .header("authorization", format!("Bearer {agent}"))
        .header("content-type", "application/json")
        .body(Body::from(format!(
            "{{\"name\": \"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        )))
        .unwrap();
    api.send(huge).await.problem(413, "payload_too_large");
    api.get(&agent, "/api/leads/not-a-uuid")
        .await
        .problem(404, "not_found");
    api.get(&agent, &format!("/api/leads/{}", uuid::Uuid::now_v7()))
        .await
        .problem(404, "not_found");
    api.patch(&agent, &path, json!({"stage": "nurture"}), Some("\"7\""))
        .await
        .problem(409, "conflict");
    api.patch(&agent, &path, json!({"stage": "nurture"}), Some("seven"))
        .await
        .problem(422, "validation");
    api.get(&agent, "/api/leads?sort=price")
        .await
        .problem(422, "validation");
    api.get(&agent, "/api/leads?cursor=zzzz")
        .await
        .problem(422, "validation");
    api.get(&agent, "/api/leads?scope=site")
        .await
        .problem(403, "forbidden");
    api.post(&agent, "/api/users", json!({"name": "X", "email": "x@demo.example", "role": "agent", "password": "a-long-password"})).await.problem(403, "forbidden");
    api.post(&admin, "/api/users", json!({"name": "X", "email": "agent1@demo.example", "role": "agent", "password": "a-long-password"})).await.problem(409, "conflict");
    api.post(&admin, "/api/users", json!({"name": "X", "email": "x@demo.example", "role": "owner", "password": "a-long-password"})).await.problem(403, "forbidden");
    api.post(
        &admin,
        "/api/impersonation",
        json!({"user_id": s.owner.id, "reason": "no"}),
    )
    .await
    .problem(403, "forbidden");
    api.post(
        &admin,
        "/api/impersonation",
        json!({"user_id": s.agent1.id}),
    )
    .await
    .problem(422, "validation");
    api.patch(
        &agent,
        "/api/settings",
        json!({"favourite_colour": "blue"}),
        None,
    )
    .await
    .problem(422, "validation");
    api.post(
        &agent,
        &format!("{path}/tasks"),
        json!({"title": "Call", "due_at": "tomorrow"}),
    )
    .await
    .problem(422, "validation");
    api.post(
        &agent,
        "/api/me/password",
        json!({"current_password": "wrong-one", "new_password": "a-long-password"}),
    )
    .await
    .problem(422, "validation");
    api.call(Method::GET, "/api/nowhere", Some(&agent), None, &[])
        .await
        .problem(404, "not_found");
    assert_eq!(
        api.app.store().head().await.unwrap(),
        before,
        "nothing refused was appended"
    );
}

async fn a_retried_write_with_an_idempotency_key_returns_the_first_response(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let body = json!({"name": "Dana"});
    let send = |key: &'static str, body: Value| {
        let api = api.clone();
        let agent = agent.clone();
        async move {
            api.call(
                Method::POST,
                "/api/leads",
                Some(&agent),
                Some(&body),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = send("lead-1", body.clone()).await;
    assert_eq!(first.status, 201);
    let head = api.app.store().head().await.unwrap();
    let retry = send("lead-1", body.clone()).await;
    assert_eq!(
        (retry.status, retry.raw.clone()),
        (201, first.raw.clone()),
        "the first response, byte for byte"
    );
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        api.app.store().head().await.unwrap(),
        head,
        "nothing appended"
    );
    send("lead-1", json!({"name": "Someone else"}))
        .await
        .problem(409, "conflict");
    let leads = api.get(&agent, "/api/leads").await;
    assert_eq!(leads.body["items"].as_array().unwrap().len(), 1);
}

async fn the_event_stream_resumes_after_last_event_id_without_gaps(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let agent = api.login("agent1@demo.example").await;
    let head = api.app.store().head().await.unwrap().0;
    let resume_after = head - 5;
    let request = Request::get("/api/events/stream")
        .header("authorization", format!("Bearer {admin}"))
        .header("last-event-id", resume_after.to_string())
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(api.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // The five stored events, then one appended once they were read (however
    // the frames group them), awaited by its own position.
    let mut ids: Vec<i64> = Vec::new();
    let mut text = String::new();
    let mut live: Option<i64> = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while live.is_none_or(|p| !ids.contains(&p)) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("the stream stopped at {ids:?}, waiting for {live:?}"))
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        ids = text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.parse::<i64>().unwrap())
            .collect();
        if live.is_none() && ids.len() >= 5 {
            let made = api
                .post(&agent, "/api/leads", json!({"name": "Live"}))
                .await;
            live = Some(made.body["position"].as_i64().unwrap());
        }
    }
    let expected: Vec<i64> = (resume_after + 1..=live.unwrap()).collect();
    assert_eq!(live, Some(head + 1), "nothing else was appended meanwhile");
    assert_eq!(
        ids, expected,
        "every event once, in order, from right after Last-Event-ID"
    );
    assert!(text.contains("event: UserLoggedIn") && text.contains("event: LeadCreated"));
}

async fn the_audit_export_streams_csv_and_ndjson(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let acting = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Export test"}),
        )
        .await;
    assert_eq!(acting.status, 200);
    for i in 0..3 {
        api.post(
            &admin,
            "/api/leads",
            json!({"name": format!("Lead, \"{i}\"")}),
        )
        .await;
    }
    api.delete(&admin, "/api/impersonation").await;
    let all = api
        .get(&admin, "/api/audit/changes?impersonated=true&limit=500")
        .await;
    let expected = all.body["items"].as_array().unwrap().len();
    assert!(expected >= 3);

    let csv = api
        .get(&admin, "/api/audit/export?format=csv&impersonated=true")
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let mut reader = csv::Reader::from_reader(csv.raw.as_slice());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), expected);
    let names: Vec<&csv::StringRecord> = rows
        .iter()
        .filter(|r| r.get(column("field")) == Some("name"))
        .collect();
    assert_eq!(names.len(), 3, "one name per lead created");
    for (i, row) in names.iter().enumerate() {
        let name = format!("Lead, \"{i}\"");
        // Text as it is: the quotes and the comma survive, no JSON quoting.
        assert_eq!(row.get(column("after")), Some(name.as_str()));
        assert_eq!(row.get(column("before")), Some(""));
        assert_eq!(row.get(column("entity_label")), Some(name.as_str()));
        assert_eq!(row.get(column("actor_name")), Some("admin"));
        assert_eq!(row.get(column("subject_name")), Some("agent1"));
        assert_eq!(row.get(column("impersonation_reason")), Some("Export test"));
    }
    let positions: Vec<i64> = rows
        .iter()
        .map(|r| r.get(column("position")).unwrap().parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "a file is in log order"
    );

    let ndjson = api
        .get(&admin, "/api/audit/export?format=ndjson&impersonated=true")
        .await;
    assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = String::from_utf8(ndjson.raw)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected);
    assert_eq!(lines[0]["actor_id"], s.admin.id.to_string());
    assert_eq!(lines[0]["actor_name"], "admin");
    assert_eq!(lines[0]["subject_name"], "agent1");
    assert_eq!(lines[0]["impersonation_reason"], "Export test");
    let newest = api
        .get(
            &admin,
            "/api/audit/export?format=ndjson&impersonated=true&order=desc",
        )
        .await;
    let first: Value = serde_json::from_str(
        String::from_utf8(newest.raw)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first,
        lines[expected - 1],
        "order=desc starts with the latest"
    );
    api.get(&admin, "/api/audit/export?format=xml")
        .await
        .problem(422, "validation");
}

#[test]
fn the_openapi_document_lists_every_route_of_the_contract() {
    let doc = serde_json::to_value(crm::http::openapi()).unwrap();
    let contract = [
        ("post", "/api/login"),
        ("post", "/api/logout"),
        ("get", "/api/me"),
        ("post", "/api/impersonation"),
        ("delete", "/api/impersonation"),
        ("get", "/api/me/impersonations"),
        ("get", "/api/me/notifications"),
        ("post", "/api/me/notifications/read"),
        ("post", "/api/me/password"),
        ("get", "/api/users"),
        ("post", "/api/users"),
        ("patch", "/api/users/{id}"),
        ("get", "/api/site/settings"),
        ("patch", "/api/site/settings"),
        ("get", "/api/leads"),
        ("post", "/api/leads"),
        ("get", "/api/leads/{id}"),
        ("patch", "/api/leads/{id}"),
        ("post", "/api/leads/{id}/assign"),
        ("post", "/api/leads/{id}/notes"),
        ("post", "/api/leads/{id}/tasks"),
        ("post", "/api/leads/{id}/tasks/{task_id}/complete"),
        ("post", "/api/leads/{id}/communications"),
        ("delete", "/api/leads/{id}"),
        ("post", "/api/leads/{id}/erase"),
        ("get", "/api/settings"),
        ("patch", "/api/settings"),
        ("get", "/api/templates"),
        ("post", "/api/templates"),
        ("patch", "/api/templates/{id}"),
        ("delete", "/api/templates/{id}"),
        ("get", "/api/audit/impersonations"),
        ("get", "/api/audit/impersonations/{id}"),
        ("post", "/api/audit/impersonations/{id}/revert"),
        ("get", "/api/audit/changes"),
        ("get", "/api/audit/export"),
        ("get", "/api/audit/verify"),
        ("get", "/api/audit/export/manifest"),
        ("get", "/api/audit/digests"),
        ("get", "/api/audit/public-key"),
        ("get", "/api/audit/view/leads"),
        ("get", "/api/audit/view/leads/{id}"),
        ("get", "/api/audit/view/settings"),
        ("get", "/api/events"),
        ("get", "/api/events/stream"),
    ];
    for (method, path) in contract {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is missing from the OpenAPI document"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        contract.len(),
        "the document has exactly the contract's operations"
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
}
