//! `If-Match` everywhere the contract offers it, on both backends: each versioned
//! resource's write, sent with a version that is no longer current, answers 409
//! `conflict` and appends nothing; sent with the current one, it is applied. The
//! versions come from reading the resource, as a client would.

mod support;

use axum::http::Method;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(every_if_match_refuses_a_stale_version_and_appends_nothing,);

/// One write offered with `If-Match`: who sends it, what, and where its
/// resource's current version is read (a path and a JSON pointer into its body).
struct Case {
    what: &'static str,
    token: String,
    method: Method,
    path: String,
    body: Option<Value>,
    read: String,
    version_at: String,
}

async fn version(api: &Api, token: &str, read: &str, at: &str) -> i64 {
    let reply = api.get(token, read).await;
    assert_eq!(reply.status, 200, "{read}: {}", reply.body);
    reply
        .body
        .pointer(at)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{read} {at}: {}", reply.body))
}

async fn every_if_match_refuses_a_stale_version_and_appends_nothing(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let owner = api.login("owner@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let agent = api.login("agent1@demo.example").await;
    // Two of each resource's writes first, so that an older version exists.
    let lead = |name: &'static str| {
        let api = api.clone();
        let agent = agent.clone();
        async move {
            let id = api
                .post(&agent, "/api/leads", json!({"name": name}))
                .await
                .id();
            let edited = api
                .patch(
                    &agent,
                    &format!("/api/leads/{id}"),
                    json!({"source": "web"}),
                    None,
                )
                .await;
            assert_eq!(edited.status, 200, "{}", edited.body);
            id
        }
    };
    let (edited, archived, assigned) = (
        lead("Edited Lead").await,
        lead("Archived Lead").await,
        lead("Assigned Lead").await,
    );
    for timezone in ["America/Chicago", "America/Denver"] {
        api.patch(&agent, "/api/settings", json!({"timezone": timezone}), None)
            .await;
    }
    let template = |name: &'static str| {
        let api = api.clone();
        let agent = agent.clone();
        async move {
            let id = api
                .post(
                    &agent,
                    "/api/templates",
                    json!({"kind": "text", "name": name, "body": "Hi"}),
                )
                .await
                .id();
            api.patch(
                &agent,
                &format!("/api/templates/{id}"),
                json!({"body": "Hello"}),
                None,
            )
            .await;
            id
        }
    };
    let (updated_template, deleted_template) =
        (template("Updated").await, template("Deleted").await);
    for minutes in [45, 50] {
        api.patch(
            &owner,
            "/api/site/settings",
            json!({"impersonation_max_minutes": minutes}),
            None,
        )
        .await;
    }
    let agent2 = s.agent2.id.to_string();
    // agent2 signs in once more: their user's version moves.
    api.login("agent2@demo.example").await;

    let cases = vec![
        Case {
            what: "edit a lead",
            token: agent.clone(),
            method: Method::PATCH,
            path: format!("/api/leads/{edited}"),
            body: Some(json!({"phone": "+1 555 0111"})),
            read: format!("/api/leads/{edited}"),
            version_at: "/version".into(),
        },
        Case {
            what: "archive a lead",
            token: agent.clone(),
            method: Method::DELETE,
            path: format!("/api/leads/{archived}"),
            body: None,
            read: format!("/api/leads/{archived}"),
            version_at: "/version".into(),
        },
        Case {
            what: "assign a lead",
            token: admin.clone(),
            method: Method::POST,
            path: format!("/api/leads/{assigned}/assign"),
            body: Some(json!({"agent_id": agent2})),
            read: format!("/api/leads/{assigned}"),
            version_at: "/version".into(),
        },
        Case {
            what: "change settings",
            token: agent.clone(),
            method: Method::PATCH,
            path: "/api/settings".into(),
            body: Some(json!({"timezone": "UTC"})),
            read: "/api/settings".into(),
            version_at: "/version".into(),
        },
        Case {
            what: "edit a template",
            token: agent.clone(),
            method: Method::PATCH,
            path: format!("/api/templates/{updated_template}"),
            body: Some(json!({"body": "Hello again"})),
            read: "/api/templates".into(),
            version_at: String::new(),
        },
        Case {
            what: "delete a template",
            token: agent.clone(),
            method: Method::DELETE,
            path: format!("/api/templates/{deleted_template}"),
            body: None,
            read: "/api/templates".into(),
            version_at: String::new(),
        },
        Case {
            what: "change a user",
            token: admin.clone(),
            method: Method::PATCH,
            path: format!("/api/users/{agent2}"),
            body: Some(json!({"role": "auditor"})),
            read: "/api/users?limit=500".into(),
            version_at: String::new(),
        },
        Case {
            what: "change the site's rules",
            token: owner.clone(),
            method: Method::PATCH,
            path: "/api/site/settings".into(),
            body: Some(json!({"impersonation_max_minutes": 30})),
            read: "/api/site/settings".into(),
            version_at: "/version".into(),
        },
    ];
    for case in cases {
        // Lists: the item's version, found by its id.
        let current = if case.version_at.is_empty() {
            let id = case.path.rsplit('/').next().unwrap().to_owned();
            let list = api.get(&case.token, &case.read).await;
            list.body["items"]
                .as_array()
                .or_else(|| list.body.as_array())
                .unwrap()
                .iter()
                .find(|item| item["id"] == id.as_str())
                .and_then(|item| item["version"].as_i64())
                .unwrap_or_else(|| panic!("{}: {}", case.what, list.body))
        } else {
            version(&api, &case.token, &case.read, &case.version_at).await
        };
        assert!(current >= 2, "{}: version {current}", case.what);
        let head = support::head(&api.app).await;
        let stale = format!("\"{}\"", current - 1);
        let refused = api
            .call(
                case.method.clone(),
                &case.path,
                Some(&case.token),
                case.body.as_ref(),
                &[("if-match", &stale)],
            )
            .await;
        assert_eq!(refused.status, 409, "{}: {}", case.what, refused.body);
        refused.problem(409, "conflict");
        assert_eq!(
            support::head(&api.app).await,
            head,
            "{}: nothing appended",
            case.what
        );
        let fresh = format!("\"{current}\"");
        let applied = api
            .call(
                case.method.clone(),
                &case.path,
                Some(&case.token),
                case.body.as_ref(),
                &[("if-match", &fresh)],
            )
            .await;
        assert!(
            (200..300).contains(&applied.status),
            "{} with the current version: {} {}",
            case.what,
            applied.status,
            applied.body
        );
        assert!(
            support::head(&api.app).await > head,
            "{}: applied",
            case.what
        );
    }
}
