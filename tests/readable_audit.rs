//! What a reader of the audit trail and the console needs from the API, on both
//! backends: changes that name what changed and who (the last name a lead or
//! template had, "System" for the site's setup, the session's reason), newest
//! first unless asked otherwise, one session's changes alone; note authors by
//! name; the users list saying why "Log in as user" is not offered; the chain
//! check naming the head; notifications the agent alone marks read.

mod support;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(
    changes_name_what_changed_and_who_newest_first,
    one_session_pages_alone_and_in_either_order,
    the_users_list_says_why_not_and_the_chain_check_names_the_head,
    only_the_agent_marks_their_notifications_read,
);

fn items(reply: &support::http::Reply) -> Vec<Value> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["items"].as_array().unwrap().clone()
}

fn positions(changes: &[Value]) -> Vec<i64> {
    changes
        .iter()
        .map(|c| c["position"].as_i64().unwrap())
        .collect()
}

/// The admin logs in as agent1 with `reason`; answers the session's id.
async fn log_in_as_agent1(api: &Api, admin: &str, agent1: &str, reason: &str) -> String {
    let me = api
        .post(
            admin,
            "/api/impersonation",
            json!({"user_id": agent1, "reason": reason}),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.body["impersonation"]["id"].as_str().unwrap().to_owned()
}

async fn changes_name_what_changed_and_who_newest_first(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let agent1 = s.agent1.id.to_string();
    let session = log_in_as_agent1(&api, &admin, &agent1, "Fix the welcome template").await;
    let template = api
        .post(
            &admin,
            "/api/templates",
            json!({"kind": "email", "name": "New lead welcome", "subject": "Hi", "body": "Hello"}),
        )
        .await;
    assert_eq!(template.status, 201, "{}", template.body);
    let template_id = template.id();
    let renamed = api
        .patch(
            &admin,
            &format!("/api/templates/{template_id}"),
            json!({"name": "Welcome, v2"}),
            None,
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(
        api.delete(&admin, &format!("/api/templates/{template_id}"))
            .await
            .status,
        204
    );
    let lead = api
        .post(&admin, "/api/leads", json!({"name": "Dana Novak"}))
        .await;
    assert_eq!(lead.status, 201, "{}", lead.body);
    let lead_id = lead.id();
    let note = api
        .post(
            &admin,
            &format!("/api/leads/{lead_id}/notes"),
            json!({"body": "Called back"}),
        )
        .await;
    assert_eq!(note.status, 201, "{}", note.body);
    api.delete(&admin, "/api/impersonation").await;
    // The admin, as themselves, on the agent's lead.
    let own = api
        .post(
            &admin,
            &format!("/api/leads/{lead_id}/notes"),
            json!({"body": "Reviewed"}),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.body);

    // The template keeps the last name it had, after its deletion too.
    let template_changes = items(
        &api.get(&admin, "/api/audit/changes?entity_type=template")
            .await,
    );
    assert_eq!(
        template_changes.len(),
        4 + 1 + 4,
        "created, renamed, deleted"
    );
    for change in &template_changes {
        assert_eq!(change["entity_label"], "Welcome, v2", "{change}");
        assert_eq!(change["actor_name"], "admin");
        assert_eq!(change["subject_name"], "agent1");
        assert_eq!(change["impersonation_id"], session.as_str());
        assert_eq!(change["impersonation_reason"], "Fix the welcome template");
    }
    let order = positions(&template_changes);
    assert!(
        order.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {order:?}"
    );
    assert_eq!(template_changes[0]["event_type"], "TemplateDeleted");

    let lead_changes = items(
        &api.get(
            &admin,
            &format!("/api/audit/changes?entity_type=lead&entity_id={lead_id}"),
        )
        .await,
    );
    assert!(lead_changes
        .iter()
        .all(|c| c["entity_label"] == "Dana Novak"));
    let latest = &lead_changes[0];
    assert_eq!(latest["field"], "note");
    assert_eq!(latest["actor_name"], "admin");
    assert_eq!(latest["subject_name"], "admin", "not while logged in as");
    assert_eq!(latest["impersonation_id"], Value::Null);
    assert_eq!(latest["impersonation_reason"], Value::Null);

    // The site's setup was done by no human.
    let setup = items(&api.get(&admin, "/api/audit/changes?entity_type=site").await);
    let created = setup.last().unwrap();
    assert_eq!(created["actor_id"], uuid::Uuid::nil().to_string());
    assert_eq!(created["actor_name"], "System");
    assert_eq!(created["entity_label"], "Demo Realty");
    // A user's settings read with the user's name.
    let settings = api
        .patch(
            &admin,
            "/api/settings",
            json!({"timezone": "America/Chicago"}),
            None,
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    let settings_changes = items(
        &api.get(&admin, "/api/audit/changes?entity_type=settings")
            .await,
    );
    assert_eq!(settings_changes[0]["entity_label"], "admin");

    // Notes name their authors: the one written while logged in as agent1 is
    // agent1's, as the agent sees it; the admin's own is the admin's.
    let read = api.get(&admin, &format!("/api/leads/{lead_id}")).await;
    let authors: Vec<&str> = read.body["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["author_name"].as_str().unwrap())
        .collect();
    assert_eq!(authors, ["agent1", "admin"]);

    api.get(&admin, "/api/audit/changes?order=sideways")
        .await
        .problem(422, "validation");
}

async fn one_session_pages_alone_and_in_either_order(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let agent1 = s.agent1.id.to_string();
    let first = log_in_as_agent1(&api, &admin, &agent1, "First").await;
    for i in 0..3 {
        api.post(&admin, "/api/leads", json!({"name": format!("First {i}")}))
            .await;
    }
    api.delete(&admin, "/api/impersonation").await;
    let second = log_in_as_agent1(&api, &admin, &agent1, "Second").await;
    api.post(&admin, "/api/leads", json!({"name": "Second 0"}))
        .await;
    api.delete(&admin, "/api/impersonation").await;

    let whole = items(
        &api.get(
            &admin,
            &format!("/api/audit/changes?impersonation_id={first}&limit=500"),
        )
        .await,
    );
    let session = api
        .get(&admin, &format!("/api/audit/impersonations/{first}"))
        .await;
    assert_eq!(
        whole.len() as i64,
        session.body["change_count"].as_i64().unwrap()
    );
    assert!(whole
        .iter()
        .all(|c| c["impersonation_id"] == first.as_str()));
    assert!(whole.iter().all(|c| c["impersonation_reason"] == "First"));

    // Page by page, both ways: the same changes, each once, in each order.
    for (order, descending) in [("desc", true), ("asc", false)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path =
                format!("/api/audit/changes?impersonation_id={first}&order={order}&limit=2");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = api.get(&admin, &path).await;
            seen.extend(items(&page));
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut expected = whole.clone();
        if !descending {
            expected.reverse();
        }
        assert_eq!(positions(&seen), positions(&expected), "order={order}");
    }

    // Sessions: newest first, or oldest with order=asc.
    let listed = items(&api.get(&admin, "/api/audit/impersonations").await);
    assert_eq!(listed[0]["id"], second.as_str());
    let oldest = items(&api.get(&admin, "/api/audit/impersonations?order=asc").await);
    assert_eq!(oldest[0]["id"], first.as_str());

    // The export of one session: only its rows.
    let file = api
        .get(
            &admin,
            &format!("/api/audit/export?format=ndjson&impersonation_id={second}"),
        )
        .await;
    assert_eq!(file.status, 200);
    let rows: Vec<Value> = String::from_utf8(file.raw)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["impersonation_reason"] == "Second"));
}

async fn the_users_list_says_why_not_and_the_chain_check_names_the_head(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let owner = api.login("owner@demo.example").await;
    let why = |users: &[Value], email: &str| -> (bool, Value) {
        let row = users
            .iter()
            .find(|u| u["email"] == email)
            .unwrap_or_else(|| panic!("{email} listed"));
        (
            row["can_impersonate"].as_bool().unwrap(),
            row["cannot_impersonate_because"].clone(),
        )
    };
    let users = items(&api.get(&admin, "/api/users").await);
    assert_eq!(why(&users, "agent1@demo.example"), (true, Value::Null));
    assert_eq!(
        why(&users, "admin@demo.example"),
        (false, json!("you cannot log in as yourself"))
    );
    assert_eq!(
        why(&users, "owner@demo.example"),
        (false, json!("only agents can be logged in as"))
    );
    let deactivated = api
        .patch(
            &admin,
            &format!("/api/users/{}", s.agent2.id),
            json!({"active": false}),
            None,
        )
        .await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.body);
    let users = items(&api.get(&admin, "/api/users").await);
    assert_eq!(
        why(&users, "agent2@demo.example"),
        (false, json!("that user is deactivated"))
    );
    let off = api
        .patch(
            &owner,
            "/api/site/settings",
            json!({"impersonation_enabled": false}),
            None,
        )
        .await;
    assert_eq!(off.status, 200, "{}", off.body);
    let users = items(&api.get(&admin, "/api/users").await);
    assert_eq!(
        why(&users, "agent1@demo.example"),
        (
            false,
            json!("logging in as users is switched off for this site")
        )
    );
    // The auditor is told why too.
    let auditor = api.login("auditor@demo.example").await;
    let users = items(&api.get(&auditor, "/api/users").await);
    assert_eq!(
        why(&users, "agent1@demo.example"),
        (
            false,
            json!("only owners and admins may log in as another user")
        )
    );

    let verified = api.get(&admin, "/api/audit/verify").await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["ok"], true);
    let site_events = api
        .app
        .store()
        .read_site(s.id, crm_events::Position::START, 10_000)
        .await
        .unwrap();
    let last = site_events.last().unwrap();
    assert_eq!(verified.body["head_position"], last.position.0);
    assert_eq!(verified.body["head_hash"], hex(&last.hash));
    assert!(verified.body["checked_at"].is_string());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn only_the_agent_marks_their_notifications_read(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let owner = api.login("owner@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let agent = api.login("agent1@demo.example").await;
    let agent1 = s.agent1.id.to_string();
    let on = api
        .patch(
            &owner,
            "/api/site/settings",
            json!({"notify_subject_on_impersonation": true}),
            None,
        )
        .await;
    assert_eq!(on.status, 200, "{}", on.body);
    log_in_as_agent1(&api, &admin, &agent1, "Check the pipeline").await;
    // While logged in as the agent, the admin sees the notice but cannot hide it.
    let seen_by_admin = items(&api.get(&admin, "/api/me/notifications").await);
    assert_eq!(seen_by_admin.len(), 1);
    api.post(&admin, "/api/me/notifications/read", json!({}))
        .await
        .problem(403, "impersonation_forbidden");
    api.delete(&admin, "/api/impersonation").await;

    let unread = items(&api.get(&agent, "/api/me/notifications").await);
    assert_eq!(unread.len(), 1);
    assert_eq!(unread[0]["read_at"], Value::Null);
    assert_eq!(
        unread[0]["text"],
        "admin logged in as you: Check the pipeline"
    );
    let first = unread[0]["position"].as_i64().unwrap();

    // A second notice arrives after the agent looked.
    log_in_as_agent1(&api, &admin, &agent1, "Again").await;
    api.delete(&admin, "/api/impersonation").await;

    let marked = api
        .post(
            &agent,
            "/api/me/notifications/read",
            json!({"up_to_position": first}),
        )
        .await;
    assert_eq!(marked.status, 204, "{}", marked.body);
    assert!(marked.header("x-position").is_some());
    let listed = items(&api.get(&agent, "/api/me/notifications").await);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["read_at"], Value::Null, "the one not yet seen");
    assert!(listed[1]["read_at"].is_string(), "the one seen");

    // Marking what is already read appends nothing.
    let head = support::head(&api.app).await;
    let again = api
        .post(
            &agent,
            "/api/me/notifications/read",
            json!({"up_to_position": first}),
        )
        .await;
    assert_eq!(again.status, 204);
    assert_eq!(support::head(&api.app).await, head);
    // All of them.
    let all = api
        .post(&agent, "/api/me/notifications/read", json!({}))
        .await;
    assert_eq!(all.status, 204);
    let listed = items(&api.get(&agent, "/api/me/notifications").await);
    assert!(listed.iter().all(|n| n["read_at"].is_string()));
    api.post(
        &agent,
        "/api/me/notifications/read",
        json!({"up_to_position": "latest"}),
    )
    .await
    .problem(422, "validation");
}
