//! Trust at the edges, on both backends: bodies that are not JSON objects, the
//! `Bearer` scheme in any case, problems from routing, auditors who change nothing.

mod support;

use axum::body::Body;
use axum::http::{Method, Request};
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::json;
use support::http::demo;
use support::*;

backend_tests!(
    a_body_that_is_not_a_json_object_is_refused_and_changes_nothing,
    the_bearer_scheme_is_case_insensitive,
    routing_answers_404_and_405_with_problems,
    auditors_change_nothing_but_their_password,
);

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
