//! Hostile input over HTTP, on both backends, by property tests: arbitrary JSON to
//! every write endpoint never gets a server error and, when refused, appends
//! nothing; SQL metacharacters, odd Unicode and long strings come back exactly as
//! stored (trimmed) or are refused naming the field; 10 MiB bodies are refused.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use support::http::{demo, Api, Reply};
use support::*;

backend_tests!(
    arbitrary_bodies_never_fail_the_server_and_refusals_append_nothing,
    hostile_text_comes_back_exactly_or_is_refused_by_name,
    ten_mebibyte_bodies_are_refused_and_append_nothing,
);

/// Runs `check` on `cases` values of the strategy `make` builds (shrinking a
/// failure to a small one), on a thread of its own that waits on the test's
/// runtime for each case.
async fn property<S>(
    cases: u32,
    make: impl FnOnce() -> S + Send + 'static,
    check: impl Fn(S::Value) -> futures_util::future::BoxFuture<'static, Result<(), TestCaseError>>
        + Send
        + 'static,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&make(), |value| runtime.block_on(check(value)))
            .map_err(|failure| failure.to_string())
    })
    .await
    .unwrap()
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Strings meant to break things: SQL and LIKE metacharacters, quotes, escapes,
/// odd Unicode (combining marks, right-to-left, zero-width, astral, the last code
/// points), controls, and whitespace, glued in any order.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "'",
        "''",
        "\"",
        "`",
        ";",
        "--",
        "/*",
        "*/",
        "%",
        "_",
        "\\",
        "\\'",
        "$1",
        "?",
        ":name",
        "' OR '1'='1",
        "'; DROP TABLE events; --",
        "NULL",
        "\u{0}",
        "\u{7}",
        "\u{1b}[31m",
        "\n",
        "\r\n",
        "\t",
        " ",
        "\u{a0}",
        "\u{200b}",
        "\u{200d}",
        "\u{202e}",
        "\u{feff}",
        "e\u{301}",
        "Zoë",
        "ß",
        "İ",
        "ﬃ",
        "日本語",
        "عربي",
        "🏠",
        "👩‍👩‍👧",
        "\u{10ffff}",
        "\u{fffd}",
        "\u{fdd0}",
        "<script>alert(1)</script>",
        "{{7*7}}",
        "${x}",
        "a",
    ]);
    prop_oneof![
        3 => prop::collection::vec(pieces, 1..12).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => ("[a-zA-Z%_' ]{1,3}", 150usize..260).prop_map(|(unit, n)| unit.repeat(n).chars().take(n).collect()),
    ]
}

/// What the server keeps of a text field, or `None` when it must refuse it.
fn kept(text: &str, max_chars: usize) -> Option<String> {
    let text = text.trim();
    let controls = text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    (!text.is_empty() && text.chars().count() <= max_chars && !controls).then(|| text.to_owned())
}

/// Any JSON, nested a little, with the endpoint's own field names among the keys.
fn any_json(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_text().prop_map(Value::from),
        "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}".prop_map(Value::from),
        prop::sample::select(vec![
            "new",
            "nurture",
            "email",
            "text",
            "call",
            "inbound",
            "agent",
            "owner",
            "2030-01-01T00:00:00Z"
        ])
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        4 => prop::sample::select(fields.to_vec()).prop_map(str::to_owned),
        1 => hostile_text(),
    ];
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        6 => prop::collection::btree_map(key, value.clone(), 0..6)
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        1 => value,
    ]
}

async fn world(db: &TestDatabase) -> (Api, Site, String) {
    let (api, s) = demo(db).await;
    let lead = api
        .post(
            &s.owner.token,
            "/api/leads",
            json!({"name": "Target", "assigned_agent_id": s.agent1.id}),
        )
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    let lead = lead.body["id"].as_str().unwrap().to_owned();
    (api, s, lead)
}

/// The write endpoints with a JSON body, and the fields each knows.
fn write_endpoints(s: &Site, lead: &str) -> Vec<(Method, String, &'static [&'static str])> {
    vec![
        (Method::POST, "/api/login".into(), &["email", "password"]),
        (
            Method::POST,
            "/api/me/password".into(),
            &["current_password", "new_password"],
        ),
        (
            Method::POST,
            "/api/impersonation".into(),
            &["user_id", "reason"],
        ),
        (
            Method::POST,
            "/api/users".into(),
            &["name", "email", "role", "password"],
        ),
        (
            Method::PATCH,
            format!("/api/users/{}", s.agent2.id),
            &["role", "active"],
        ),
        (
            Method::PATCH,
            "/api/site/settings".into(),
            &[
                "impersonation_enabled",
                "impersonation_max_minutes",
                "impersonation_reason_required",
                "notify_subject_on_impersonation",
            ],
        ),
        (
            Method::POST,
            "/api/leads".into(),
            &[
                "name",
                "email",
                "phone",
                "source",
                "stage",
                "tags",
                "assigned_agent_id",
            ],
        ),
        (
            Method::PATCH,
            format!("/api/leads/{lead}"),
            &["name", "email", "phone", "source", "stage", "tags"],
        ),
        (
            Method::POST,
            format!("/api/leads/{lead}/assign"),
            &["agent_id"],
        ),
        (Method::POST, format!("/api/leads/{lead}/notes"), &["body"]),
        (
            Method::POST,
            format!("/api/leads/{lead}/tasks"),
            &["title", "due_at"],
        ),
        (
            Method::POST,
            format!("/api/leads/{lead}/communications"),
            &["channel", "direction", "summary"],
        ),
        (
            Method::PATCH,
            "/api/settings".into(),
            &[
                "timezone",
                "email_signature",
                "notifications.new_lead_email",
                "communication.phone_number",
                "lead_manager.default_sort",
            ],
        ),
        (
            Method::POST,
            "/api/templates".into(),
            &["kind", "name", "subject", "body"],
        ),
    ]
}

async fn arbitrary_bodies_never_fail_the_server_and_refusals_append_nothing(db: &TestDatabase) {
    let (api, s, lead) = world(db).await;
    let token = Arc::new(s.owner.token.clone());
    for (method, path, fields) in write_endpoints(&s, &lead) {
        let (api, token) = (api.clone(), token.clone());
        property(
            48,
            move || any_json(fields),
            move |body| {
                let (api, token, method, path) =
                    (api.clone(), token.clone(), method.clone(), path.clone());
                Box::pin(async move {
                    let before = head(&api.app).await;
                    let reply = api
                        .call(method.clone(), &path, Some(&token), Some(&body), &[])
                        .await;
                    let what = format!("{method} {path} {body}: {} {}", reply.status, reply.body);
                    prop_assert!(reply.status < 500, "{what}");
                    if !(200..300).contains(&reply.status) {
                        prop_assert_eq!(
                            reply.header("content-type"),
                            Some("application/problem+json"),
                            "{}",
                            what
                        );
                        prop_assert!(
                            reply.body["type"].is_string() && reply.body["detail"].is_string(),
                            "{what}"
                        );
                        prop_assert_eq!(
                            head(&api.app).await,
                            before,
                            "a refusal appended: {}",
                            what
                        );
                    }
                    Ok(())
                })
            },
        )
        .await;
    }
}

async fn hostile_text_comes_back_exactly_or_is_refused_by_name(db: &TestDatabase) {
    let (api, s, lead) = world(db).await;
    let (api, token, lead) = (
        Arc::new(api),
        Arc::new(s.owner.token.clone()),
        Arc::new(lead),
    );
    property(
        160,
        || (hostile_text(), hostile_text()),
        move |(name, note)| {
            let (api, token, lead) = (api.clone(), token.clone(), lead.clone());
            Box::pin(async move {
                // A new lead's name: kept exactly (trimmed), and found by searching for it.
                let created = api.post(&token, "/api/leads", json!({"name": name})).await;
                match kept(&name, 200) {
                    Some(kept) => {
                        prop_assert_eq!(created.status, 201, "{}", created.body);
                        prop_assert_eq!(created.body["name"].as_str(), Some(kept.as_str()));
                        let id = created.body["id"].as_str().unwrap();
                        let read = api.get(&token, &format!("/api/leads/{id}")).await;
                        prop_assert_eq!(read.body["name"].as_str(), Some(kept.as_str()));
                        let q: String = url_encode(&kept);
                        let found = api
                            .get(&token, &format!("/api/leads?scope=site&limit=500&q={q}"))
                            .await;
                        prop_assert_eq!(found.status, 200, "{}", found.body);
                        let ids: Vec<&str> = found.body["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|l| l["id"].as_str())
                            .collect();
                        prop_assert!(
                            ids.contains(&id),
                            "searching for {kept:?} finds it: {ids:?}"
                        );
                        // Renamed: the audit trail has the change, before and after, exactly.
                        // (One character changed: the new name fits the limit too.)
                        let after: String =
                            kept.chars().take(199).chain(std::iter::once('!')).collect();
                        let renamed = api
                            .patch(
                                &token,
                                &format!("/api/leads/{id}"),
                                json!({"name": after}),
                                None,
                            )
                            .await;
                        prop_assert_eq!(renamed.status, 200, "{}", renamed.body);
                        let changes = api
                            .get(
                                &token,
                                &format!("/api/audit/changes?entity_id={id}&limit=50"),
                            )
                            .await;
                        let change = changes.body["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|c| c["field"] == "name" && c["event_type"] != "LeadCreated")
                            .cloned();
                        prop_assert!(change.is_some(), "{}", changes.body);
                        let change = change.unwrap();
                        prop_assert_eq!(change["before"].as_str(), Some(kept.as_str()));
                        prop_assert_eq!(change["after"].as_str(), Some(after.as_str()));
                    }
                    None => refused(&created, "name")?,
                }
                // A note's body, on the lead's detail.
                let added = api
                    .post(
                        &token,
                        &format!("/api/leads/{lead}/notes"),
                        json!({"body": note}),
                    )
                    .await;
                match kept(&note, 10_000) {
                    Some(kept) => {
                        prop_assert_eq!(added.status, 201, "{}", added.body);
                        let detail = api.get(&token, &format!("/api/leads/{lead}")).await;
                        let bodies: Vec<&str> = detail.body["notes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|n| n["body"].as_str())
                            .collect();
                        prop_assert!(bodies.contains(&kept.as_str()), "{kept:?} in {bodies:?}");
                    }
                    None => refused(&added, "body")?,
                }
                Ok(())
            })
        },
    )
    .await;
}

/// A 422 naming `field`.
fn refused(reply: &Reply, field: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(reply.status, 422, "{}", reply.body);
    let fields: Vec<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    prop_assert_eq!(fields, vec![field]);
    Ok(())
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn ten_mebibyte_bodies_are_refused_and_append_nothing(db: &TestDatabase) {
    let (api, s, lead) = world(db).await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let before = head(&api.app).await;
    for (method, path, _) in write_endpoints(&s, &lead) {
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header("authorization", format!("Bearer {}", s.owner.token))
            .header("content-type", "application/json")
            .body(Body::from(huge.clone()))
            .unwrap();
        let reply = api.send(request).await;
        assert_eq!(
            (reply.status, reply.body["type"].as_str()),
            (413, Some("payload_too_large")),
            "{method} {path}: {}",
            reply.body
        );
    }
    assert_eq!(head(&api.app).await, before, "nothing was appended");
}
