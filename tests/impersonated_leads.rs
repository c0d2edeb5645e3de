//! Lead access follows the subject, not the actor (DESIGN: "the Lead Manager acts as
//! the subject"), on both backends. Logged in as agent1, an admin sees and works
//! agent1's leads only: every lead endpoint answers 404 for a lead of agent2's,
//! the whole site's list and assignment are refused, and nothing is appended;
//! the same admin as themselves reaches agent2's lead. A check made against the
//! actor (the admin, who may see every lead) would pass the first half.

mod support;

use axum::http::Method;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::demo;

backend_tests!(logged_in_as_agent1_an_admin_reaches_only_agent1s_leads,);

async fn logged_in_as_agent1_an_admin_reaches_only_agent1s_leads(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let agent2 = api.login("agent2@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let (agent1_id, agent2_id) = (s.agent1.id.to_string(), s.agent2.id.to_string());
    let mine = api
        .post(&agent1, "/api/leads", json!({"name": "Agent One's Lead"}))
        .await
        .id();
    let theirs = api
        .post(&agent2, "/api/leads", json!({"name": "Agent Two's Lead"}))
        .await
        .id();
    let task = api
        .post(
            &agent2,
            &format!("/api/leads/{theirs}/tasks"),
            json!({"title": "Call", "due_at": "2030-01-01T09:00:00Z"}),
        )
        .await
        .id();
    let me = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": agent1_id, "reason": "Checking lead access"}),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    let head = support::head(&api.app).await;

    // Every lead endpoint, on agent2's lead: not there for agent1.
    let on_theirs: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/leads/{theirs}"), None),
        (
            Method::PATCH,
            format!("/api/leads/{theirs}"),
            Some(json!({"phone": "+1 555 0100"})),
        ),
        (Method::DELETE, format!("/api/leads/{theirs}"), None),
        (
            Method::POST,
            format!("/api/leads/{theirs}/notes"),
            Some(json!({"body": "A note"})),
        ),
        (
            Method::POST,
            format!("/api/leads/{theirs}/tasks"),
            Some(json!({"title": "Task", "due_at": "2030-01-01T09:00:00Z"})),
        ),
        (
            Method::POST,
            format!("/api/leads/{theirs}/tasks/{task}/complete"),
            None,
        ),
        (
            Method::POST,
            format!("/api/leads/{theirs}/communications"),
            Some(json!({"channel": "call", "direction": "outbound", "summary": "Hi"})),
        ),
    ];
    for (method, path, body) in &on_theirs {
        let reply = api
            .call(method.clone(), path, Some(&admin), body.as_ref(), &[])
            .await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        reply.problem(404, "not_found");
    }
    // The whole site, assignment, creating a lead for someone else: refused.
    for (method, path, body) in [
        (Method::GET, "/api/leads?scope=site".to_owned(), None),
        (
            Method::POST,
            format!("/api/leads/{mine}/assign"),
            Some(json!({"agent_id": agent2_id})),
        ),
        (
            Method::POST,
            "/api/leads".to_owned(),
            Some(json!({"name": "For Agent Two", "assigned_agent_id": agent2_id})),
        ),
    ] {
        let reply = api
            .call(method.clone(), &path, Some(&admin), body.as_ref(), &[])
            .await;
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
    }
    assert_eq!(support::head(&api.app).await, head, "nothing appended");

    // What comes back is agent1's: the list and the lead.
    let listed = api.get(&admin, "/api/leads?limit=500").await;
    let items = listed.body["items"].as_array().unwrap();
    assert!(items.iter().any(|l| l["id"] == mine.as_str()));
    assert!(
        items
            .iter()
            .all(|l| l["assigned_agent_id"] == agent1_id.as_str()),
        "only agent1's leads: {}",
        listed.body
    );
    let counted: i64 = listed.body["counts_by_stage"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(counted, items.len() as i64, "the counts are agent1's too");
    let read = api.get(&admin, &format!("/api/leads/{mine}")).await;
    assert_eq!(read.body["name"], "Agent One's Lead");
    // A lead created while logged in as agent1 is agent1's.
    let made = api
        .post(&admin, "/api/leads", json!({"name": "Made As Agent One"}))
        .await;
    assert_eq!(made.body["assigned_agent_id"], agent1_id.as_str());

    // Back as themselves, the admin reaches agent2's lead and the whole site.
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    let read = api.get(&admin, &format!("/api/leads/{theirs}")).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["assigned_agent_id"], agent2_id.as_str());
    assert_eq!(api.get(&admin, "/api/leads?scope=site").await.status, 200);
}
