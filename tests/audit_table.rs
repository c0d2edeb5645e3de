//! The audit trail's content for every kind of change, against a table written
//! from the contract (not from the code), on both backends. Each change to a lead,
//! a template or the settings is made once by agent1 and once by an admin logged in
//! as agent1; the changes only owners and admins make as themselves (assignment,
//! roles, deactivation, the site's rules) once each. For every one the trail must
//! hold exactly the table's fields with their before and after, the actor (who
//! acted), the subject (whose account) and the impersonation (the session, or
//! none).

mod support;

use axum::http::Method;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(every_kind_of_change_is_in_the_audit_as_the_table_says,);

/// One write and what the audit must say of it: `(field, before, after)`, where an
/// object stands for the keys it names (ids are the server's).
struct Row {
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    fields: Vec<(&'static str, Value, Value)>,
}

fn row(
    what: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    fields: Vec<(&'static str, Value, Value)>,
) -> Row {
    Row {
        what,
        method,
        path,
        body,
        fields,
    }
}

/// Whether `actual` holds `expected`: equal, or for an object, every key it names.
fn holds(actual: &Value, expected: &Value) -> bool {
    match expected {
        Value::Object(keys) => keys.iter().all(|(k, v)| holds(&actual[k.as_str()], v)),
        other => actual == other,
    }
}

/// Who made a row's write: the token, and the actor, subject and session the trail
/// must name.
struct By<'a> {
    token: &'a str,
    actor: String,
    subject: String,
    session: Value,
}

/// Makes `row`'s write and checks its changes in the trail (read by the auditor).
async fn check(api: &Api, auditor: &str, by: &By<'_>, row: &Row) {
    let reply = api
        .call(
            row.method.clone(),
            &row.path,
            Some(by.token),
            row.body.as_ref(),
            &[],
        )
        .await;
    assert!(
        (200..300).contains(&reply.status),
        "{}: {} {}",
        row.what,
        reply.status,
        reply.body
    );
    let position: i64 = reply
        .header("x-position")
        .unwrap_or_else(|| panic!("{}: no position", row.what))
        .parse()
        .unwrap();
    let recent = api
        .get(auditor, "/api/audit/changes?order=desc&limit=50")
        .await;
    let changes: Vec<&Value> = recent.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["position"] == position)
        .collect();
    let mut fields: Vec<&str> = changes
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    let mut expected: Vec<&str> = row.fields.iter().map(|(f, _, _)| *f).collect();
    expected.sort_unstable();
    assert_eq!(fields, expected, "{}: the fields", row.what);
    for (field, before, after) in &row.fields {
        let change = changes.iter().find(|c| c["field"] == *field).unwrap();
        assert!(
            holds(&change["before"], before) && holds(&change["after"], after),
            "{} {field}: expected {before} -> {after}, the trail says {} -> {}",
            row.what,
            change["before"],
            change["after"]
        );
        assert_eq!(change["actor_id"], by.actor.as_str(), "{}: actor", row.what);
        assert_eq!(
            change["subject_id"],
            by.subject.as_str(),
            "{}: subject",
            row.what
        );
        assert_eq!(
            change["impersonation_id"], by.session,
            "{}: session",
            row.what
        );
    }
}

async fn every_kind_of_change_is_in_the_audit_as_the_table_says(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let owner = api.login("owner@demo.example").await;
    let auditor = api.login("auditor@demo.example").await;
    let (agent1, agent2) = (s.agent1.id.to_string(), s.agent2.id.to_string());

    let started = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": agent1, "reason": "The audit table"}),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let session = started.body["impersonation"]["id"].clone();
    let as_agent = By {
        token: &agent,
        actor: agent1.clone(),
        subject: agent1.clone(),
        session: Value::Null,
    };
    let as_admin_as_agent = By {
        token: &admin,
        actor: s.admin.id.to_string(),
        subject: agent1.clone(),
        session,
    };

    for (by, n) in [(&as_agent, 1), (&as_admin_as_agent, 2)] {
        let name = format!("Table Lead {n}");
        let created = api
            .post(
                by.token,
                "/api/leads",
                json!({"name": name, "email": format!("t{n}@example.com")}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let lead = created.id();
        // The creation, from its own position.
        let position: i64 = created.header("x-position").unwrap().parse().unwrap();
        let trail = api
            .get(
                &auditor,
                &format!("/api/audit/changes?entity_id={lead}&order=asc"),
            )
            .await;
        let made: Vec<&Value> = trail.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["position"] == position)
            .collect();
        let mut fields: Vec<&str> = made.iter().map(|c| c["field"].as_str().unwrap()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["assigned_agent_id", "email", "name", "stage", "tags"],
            "a lead's creation"
        );
        for c in &made {
            assert_eq!(c["before"], Value::Null);
            assert_eq!(c["actor_id"], by.actor.as_str());
            assert_eq!(c["subject_id"], by.subject.as_str());
            assert_eq!(c["impersonation_id"], by.session);
        }
        let after = |f: &str| made.iter().find(|c| c["field"] == f).unwrap()["after"].clone();
        assert_eq!(after("name"), json!(name));
        assert_eq!(after("stage"), json!("new"));
        assert_eq!(after("assigned_agent_id"), json!(agent1));

        let settings = api.get(by.token, "/api/settings").await;
        let zone_before = settings.body["settings"]["timezone"].clone();
        let zone_after = if n == 1 {
            "America/Chicago"
        } else {
            "Europe/Paris"
        };
        let template = api
            .post(
                by.token,
                "/api/templates",
                json!({"kind": "text", "name": format!("T{n}"), "body": "B"}),
            )
            .await;
        let template_position: i64 = template.header("x-position").unwrap().parse().unwrap();
        let template = template.id();
        let made = api
            .get(
                &auditor,
                &format!("/api/audit/changes?entity_id={template}"),
            )
            .await;
        let mut fields: Vec<&str> = made.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["position"] == template_position)
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["body", "kind", "name"], "a template's creation");

        let lead_path = format!("/api/leads/{lead}");
        let rows = vec![
            row(
                "edit a field",
                Method::PATCH,
                lead_path.clone(),
                Some(json!({"phone": "+1 555 0101"})),
                vec![("phone", Value::Null, json!("+1 555 0101"))],
            ),
            row(
                "change the stage",
                Method::PATCH,
                lead_path.clone(),
                Some(json!({"stage": "contacted"})),
                vec![("stage", json!("new"), json!("contacted"))],
            ),
            row(
                "add a tag",
                Method::PATCH,
                lead_path.clone(),
                Some(json!({"tags": ["vip"]})),
                vec![("tag", Value::Null, json!("vip"))],
            ),
            row(
                "remove a tag",
                Method::PATCH,
                lead_path.clone(),
                Some(json!({"tags": []})),
                vec![("tag", json!("vip"), Value::Null)],
            ),
            row(
                "add a note",
                Method::POST,
                format!("{lead_path}/notes"),
                Some(json!({"body": "Called"})),
                vec![("note", Value::Null, json!({"body": "Called"}))],
            ),
            row(
                "add a task",
                Method::POST,
                format!("{lead_path}/tasks"),
                Some(json!({"title": "Call back", "due_at": "2030-01-01T09:00:00Z"})),
                vec![("task", Value::Null, json!({"title": "Call back"}))],
            ),
            row(
                "log a call",
                Method::POST,
                format!("{lead_path}/communications"),
                Some(
                    json!({"channel": "call", "direction": "outbound", "summary": "Left a message"}),
                ),
                vec![(
                    "communication",
                    Value::Null,
                    json!({"channel": "call", "direction": "outbound", "summary": "Left a message"}),
                )],
            ),
            row(
                "change a setting",
                Method::PATCH,
                "/api/settings".into(),
                Some(json!({"timezone": zone_after})),
                vec![("timezone", zone_before, json!(zone_after))],
            ),
            row(
                "edit a template",
                Method::PATCH,
                format!("/api/templates/{template}"),
                Some(json!({"body": "B2"})),
                vec![("body", json!("B"), json!("B2"))],
            ),
            row(
                "delete a template",
                Method::DELETE,
                format!("/api/templates/{template}"),
                None,
                vec![
                    ("body", json!("B2"), Value::Null),
                    ("kind", json!("text"), Value::Null),
                    ("name", json!(format!("T{n}")), Value::Null),
                ],
            ),
        ];
        for r in &rows {
            check(&api, &auditor, by, r).await;
        }
        // The task just added, completed; then the lead archived.
        let task = api.get(by.token, &lead_path).await.body["tasks"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let rest = vec![
            row(
                "complete a task",
                Method::POST,
                format!("{lead_path}/tasks/{task}/complete"),
                None,
                vec![(
                    "task",
                    json!({"id": task, "completed": false}),
                    json!({"id": task, "completed": true}),
                )],
            ),
            row(
                "archive the lead",
                Method::DELETE,
                lead_path.clone(),
                None,
                vec![("archived", json!(false), json!(true))],
            ),
        ];
        for r in &rest {
            check(&api, &auditor, by, r).await;
        }
    }
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);

    // What only owners and admins do, as themselves.
    let lead = api
        .post(&agent, "/api/leads", json!({"name": "To Reassign"}))
        .await
        .id();
    let as_admin = By {
        token: &admin,
        actor: s.admin.id.to_string(),
        subject: s.admin.id.to_string(),
        session: Value::Null,
    };
    let as_owner = By {
        token: &owner,
        actor: s.owner.id.to_string(),
        subject: s.owner.id.to_string(),
        session: Value::Null,
    };
    let site = api.get(&owner, "/api/site/settings").await;
    let minutes = site.body["impersonation_max_minutes"].clone();
    for (by, r) in [
        (
            &as_admin,
            row(
                "reassign a lead",
                Method::POST,
                format!("/api/leads/{lead}/assign"),
                Some(json!({"agent_id": agent2})),
                vec![("assigned_agent_id", json!(agent1), json!(agent2))],
            ),
        ),
        (
            &as_admin,
            row(
                "erase a lead's personal data",
                Method::POST,
                format!("/api/leads/{lead}/erase"),
                Some(json!({"reason": "erasure request #7"})),
                vec![
                    ("erased", json!(false), json!(true)),
                    ("reason", Value::Null, json!("erasure request #7")),
                ],
            ),
        ),
        (
            &as_admin,
            row(
                "change a role",
                Method::PATCH,
                format!("/api/users/{agent2}"),
                Some(json!({"role": "auditor"})),
                vec![("role", json!("agent"), json!("auditor"))],
            ),
        ),
        (
            &as_admin,
            row(
                "deactivate a user",
                Method::PATCH,
                format!("/api/users/{agent2}"),
                Some(json!({"active": false})),
                vec![("active", json!(true), json!(false))],
            ),
        ),
        (
            &as_owner,
            row(
                "change the site's rules",
                Method::PATCH,
                "/api/site/settings".into(),
                Some(json!({"impersonation_max_minutes": 30})),
                vec![("impersonation_max_minutes", minutes, json!(30))],
            ),
        ),
    ] {
        check(&api, &auditor, by, &r).await;
    }
}
