//! Reverting a "Log in as user" session, on both backends: a dry run plans every
//! change of the session newest first and appends nothing; the revert puts back
//! lead fields, stage, tags, settings and templates (created: deleted; updated:
//! restored; deleted: recreated) as the reverting admin on the agent's account,
//! caused by the session; a field the agent changed again since is a conflict, left
//! alone; a note is not revertible; who may revert, and when; two servers
//! reverting one session at the same moment revert it once.

mod support;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(
    a_session_is_reverted_where_nothing_changed_since_and_the_rest_is_said,
    only_owners_and_admins_revert_ended_sessions_of_their_site,
    two_servers_reverting_one_session_at_once_revert_it_once,
);

async fn head(api: &Api) -> i64 {
    support::head(&api.app).await.0
}

/// (entity_type, field, action) of each planned item, in the plan's order.
fn actions(plan: &Value) -> Vec<(String, String, String)> {
    plan["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["entity_type"].as_str().unwrap().to_owned(),
                i["field"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn item(entity: &str, field: &str, action: &str) -> (String, String, String) {
    (entity.into(), field.into(), action.into())
}

async fn a_session_is_reverted_where_nothing_changed_since_and_the_rest_is_said(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let dana = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "Dana Novak", "phone": "+1 555 0100", "source": "zillow"}),
        )
        .await
        .id();
    let kept = api
        .post(
            &agent,
            "/api/templates",
            json!({"kind": "text", "name": "Welcome", "body": "Hi"}),
        )
        .await
        .id();
    let dropped = api
        .post(
            &agent,
            "/api/templates",
            json!({"kind": "email", "name": "Intro", "subject": "Hello", "body": "Meet me"}),
        )
        .await
        .id();
    let settings_before = api.get(&agent, "/api/settings").await.body["settings"].clone();

    let admin = api.login("admin@demo.example").await;
    let me = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Tidy up Dana"}),
        )
        .await;
    let session = me.body["impersonation"]["id"].as_str().unwrap().to_owned();
    let lead = format!("/api/leads/{dana}");
    let ok = |reply: support::http::Reply| {
        assert!((200..300).contains(&reply.status), "{}", reply.body);
    };
    ok(api
        .patch(
            &admin,
            &lead,
            json!({"phone": "+1 555 0199", "source": "billboard"}),
            None,
        )
        .await);
    ok(api
        .patch(&admin, &lead, json!({"stage": "contacted"}), None)
        .await);
    ok(api
        .patch(&admin, &lead, json!({"tags": ["vip"]}), None)
        .await);
    ok(api
        .post(
            &admin,
            &format!("{lead}/notes"),
            json!({"body": "Called about financing"}),
        )
        .await);
    ok(api
        .patch(
            &admin,
            "/api/settings",
            json!({"timezone": "Europe/Paris", "email_signature": "Best, Agnes"}),
            None,
        )
        .await);
    let made = api
        .post(
            &admin,
            "/api/templates",
            json!({"kind": "text", "name": "Follow-up", "body": "Any news?"}),
        )
        .await
        .id();
    ok(api
        .patch(
            &admin,
            &format!("/api/templates/{kept}"),
            json!({"body": "Hello there"}),
            None,
        )
        .await);
    ok(api
        .delete(&admin, &format!("/api/templates/{dropped}"))
        .await);
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    // The agent changes one of those fields again afterwards.
    ok(api
        .patch(&agent, &lead, json!({"source": "referral"}), None)
        .await);

    let revert = format!("/api/audit/impersonations/{session}/revert");
    let before = head(&api).await;
    let dry = api
        .post(
            &admin,
            &revert,
            json!({"reason": "Not what Agnes wanted", "dry_run": true}),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body["position"], Value::Null);
    assert_eq!(head(&api).await, before, "a dry run appends nothing");
    let expected = [
        item("template", "deleted", "revert"),
        item("template", "body", "revert"),
        item("template", "created", "revert"),
        item("settings", "email_signature", "revert"),
        item("settings", "timezone", "revert"),
        item("lead", "note", "not_revertible"),
        item("lead", "tag", "revert"),
        item("lead", "stage", "revert"),
        item("lead", "phone", "revert"),
        item("lead", "source", "conflict"),
    ];
    let mut planned = actions(&dry.body);
    // One event's fields come in its own order; compare each event's as a set.
    planned[3..5].sort();
    planned[8..10].sort();
    let mut wanted = expected.to_vec();
    wanted[3..5].sort();
    wanted[8..10].sort();
    assert_eq!(planned, wanted, "{}", dry.body);
    let source = dry.body["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["field"] == "source")
        .unwrap();
    assert_eq!(
        (&source["current"], &source["target"]),
        (&json!("referral"), &json!("zillow"))
    );
    let note = dry.body["plan"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["field"] == "note")
        .unwrap();
    assert!(note["why"]
        .as_str()
        .unwrap()
        .contains("no way to take one back"));

    let done = api
        .call(
            axum::http::Method::POST,
            &revert,
            Some(&admin),
            Some(&json!({"reason": "Not what Agnes wanted"})),
            &[("idempotency-key", "revert-1")],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let at = done.body["position"].as_i64().unwrap();
    assert!(at > before);
    assert_eq!(actions(&done.body).len(), expected.len());

    // Put back, but for what changed since; the note stays.
    let dana_now = api.get(&agent, &lead).await.body;
    assert_eq!(dana_now["phone"], "+1 555 0100");
    assert_eq!(dana_now["source"], "referral");
    assert_eq!(dana_now["stage"], "new");
    assert_eq!(dana_now["tags"], json!([]));
    assert_eq!(dana_now["notes"].as_array().unwrap().len(), 1);
    let settings_now = api.get(&agent, "/api/settings").await.body["settings"].clone();
    assert_eq!(settings_now, settings_before);
    let templates = api.get(&agent, "/api/templates").await.body;
    let templates = templates["items"]
        .as_array()
        .or(templates.as_array())
        .unwrap()
        .clone();
    let by_id = |id: &str| templates.iter().find(|t| t["id"] == id).cloned();
    assert_eq!(
        by_id(&made),
        None,
        "the template made in the session is deleted"
    );
    assert_eq!(by_id(&kept).unwrap()["body"], "Hi");
    let back = by_id(&dropped).expect("the template deleted in the session is back");
    assert_eq!(
        (&back["name"], &back["subject"], &back["body"]),
        (&json!("Intro"), &json!("Hello"), &json!("Meet me"))
    );

    // As the admin, on the agent's account, caused by the session; summed up on it.
    let events = api
        .get(&admin, &format!("/api/events?after={before}&limit=100"))
        .await
        .body;
    let events = events["items"].as_array().unwrap();
    assert!(events.len() >= 6, "{events:?}");
    for event in events {
        assert_eq!(event["actor_id"], s.admin.id.to_string(), "{event}");
        assert_eq!(event["subject_id"], s.agent1.id.to_string(), "{event}");
        assert_eq!(event["impersonation_id"], Value::Null, "{event}");
        assert_eq!(event["causation_id"], session.as_str(), "{event}");
    }
    let summary = events.last().unwrap();
    assert_eq!(summary["event_type"], "ImpersonationReverted");
    assert_eq!(summary["payload"]["reason"], "Not what Agnes wanted");
    assert_eq!(
        (
            &summary["payload"]["reverted"],
            &summary["payload"]["conflicts"],
            &summary["payload"]["not_revertible"]
        ),
        (&json!(8), &json!(1), &json!(1))
    );
    // The audit trail: the revert's changes, by the admin as themselves.
    let changes = api
        .get(
            &admin,
            &format!(
                "/api/audit/changes?actor_id={}&order=asc&limit=500",
                s.admin.id
            ),
        )
        .await
        .body;
    let reverted: Vec<&Value> = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["position"].as_i64().unwrap() > before)
        .collect();
    assert!(reverted
        .iter()
        .all(|c| c["impersonation_id"].is_null() && c["subject_id"] == s.agent1.id.to_string()));
    let phone = reverted.iter().find(|c| c["field"] == "phone").unwrap();
    assert_eq!(
        (&phone["before"], &phone["after"]),
        (&json!("+1 555 0199"), &json!("+1 555 0100"))
    );
    let decision = reverted
        .iter()
        .find(|c| c["entity_type"] == "session")
        .unwrap();
    assert_eq!(decision["field"], "reverted");
    assert_eq!(decision["entity_id"], session.as_str());

    // Once only: again (planned, done, or retried with its key) is a conflict, and
    // the session's page says it was reverted.
    let after = head(&api).await;
    for body in [
        json!({"reason": "Twice", "dry_run": true}),
        json!({"reason": "Twice"}),
    ] {
        api.post(&admin, &revert, body)
            .await
            .problem(409, "conflict");
    }
    let retried = api
        .call(
            axum::http::Method::POST,
            &revert,
            Some(&admin),
            Some(&json!({"reason": "Not what Agnes wanted"})),
            &[("idempotency-key", "revert-1")],
        )
        .await;
    retried.problem(409, "conflict");
    assert_eq!(head(&api).await, after);
    let page = api
        .get(&admin, &format!("/api/audit/impersonations/{session}"))
        .await;
    assert_eq!(page.body["reverted"], true);
    // The answer names the leads' personal values: it is not kept for retries (an
    // erasure of one lead could not find it).
    let kept = "SELECT count(*) FROM http_idempotency WHERE status <> 0";
    let kept: i64 = crm_events::on_pool!(api.app.store().database(), |pool| {
        sqlx::query_scalar(kept).fetch_one(pool).await.unwrap()
    });
    assert_eq!(kept, 0);
    let verify = api.get(&admin, "/api/audit/verify").await;
    assert_eq!(verify.body["ok"], true);
}

async fn only_owners_and_admins_revert_ended_sessions_of_their_site(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let admin = api.login("admin@demo.example").await;
    let me = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Check"}),
        )
        .await;
    let session = me.body["impersonation"]["id"].as_str().unwrap().to_owned();
    let revert = format!("/api/audit/impersonations/{session}/revert");
    let body = json!({"reason": "Undo", "dry_run": true});
    let before = head(&api).await;
    // While logged in as someone: never.
    api.post(&admin, &revert, body.clone())
        .await
        .problem(403, "impersonation_forbidden");
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    let owner = api.login("owner@demo.example").await;
    let running = api
        .post(
            &owner,
            "/api/impersonation",
            json!({"user_id": s.agent2.id, "reason": "Still going"}),
        )
        .await;
    let live = running.body["impersonation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent = api.login("agent1@demo.example").await;
    api.post(&agent, &revert, body.clone())
        .await
        .problem(403, "forbidden");
    let auditor = api.login("auditor@demo.example").await;
    api.post(&auditor, &revert, body.clone())
        .await
        .problem(403, "forbidden");
    api.post(&admin, &revert, json!({"reason": "  "}))
        .await
        .problem(422, "validation");
    api.post(&admin, &revert, json!({"reason": "Undo", "extra": 1}))
        .await
        .problem(422, "validation");
    api.post(
        &admin,
        &format!("/api/audit/impersonations/{live}/revert"),
        body.clone(),
    )
    .await
    .problem(409, "conflict");
    let other = support::site(&api.app, "Rival Homes", "rival.example").await;
    let rival = api.login(&other.admin.email).await;
    api.post(&rival, &revert, body.clone())
        .await
        .problem(404, "not_found");
    api.post(
        &admin,
        &format!("/api/audit/impersonations/{}/revert", uuid::Uuid::now_v7()),
        body.clone(),
    )
    .await
    .problem(404, "not_found");
    let head_after_logins = head(&api).await;
    // Sign-ins and the second session appended; no revert did.
    let events = api
        .get(&admin, &format!("/api/events?after={before}&limit=100"))
        .await
        .body;
    assert!(events["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["event_type"] != "ImpersonationReverted"));
    assert!(head_after_logins > before);
    // An empty session reverts to nothing but the decision.
    let done = api.post(&admin, &revert, json!({"reason": "Undo"})).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["plan"], json!([]));
    assert_eq!(done.body["position"].as_i64(), Some(head(&api).await));
}

async fn two_servers_reverting_one_session_at_once_revert_it_once(db: &TestDatabase) {
    use crm::app::AppError;
    use crm::domain::lead::LeadEdit;
    use crm::domain::values::Reason;
    use crm_events::catalog::values::{ImpersonationMode, Stage};

    let one = support::app(db).await;
    let other = support::app(db).await;
    let s = support::site(&one, "Demo Realty", "demo.example").await;
    let lead = support::lead_of(&one, &s.agent1.ctx, "Dana").await;
    let acting = one
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            support::reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    let edit = LeadEdit {
        stage: Some(Stage::Contacted),
        ..LeadEdit::default()
    };
    one.edit_lead(&acting, lead, edit, None).await.unwrap();
    one.return_to_admin(&acting).await.unwrap();
    let id = acting.impersonation().unwrap();
    let before = support::head(&one).await;
    let why = || Reason::parse("Undo the stage").unwrap();
    let (a, b) = tokio::join!(
        one.revert_session(&s.admin.ctx, id, why(), false),
        other.revert_session(&s.owner.ctx, id, why(), false),
    );
    let stood = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(stood, 1, "{a:?} / {b:?}");
    for refused in [a, b].into_iter().filter_map(Result::err) {
        assert!(matches!(refused, AppError::Conflict(_)), "{refused:?}");
    }
    let appended: Vec<String> = support::events_after(&one, before)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(appended, ["LeadStageChanged", "ImpersonationReverted"]);
    let dana = one.lead_detail(&s.agent1.ctx, lead).await.unwrap();
    assert_eq!(dana.lead.stage, "new");
}
