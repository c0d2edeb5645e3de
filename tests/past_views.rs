//! The agent's screen at any moment, over HTTP on both backends: what an admin
//! changed while logged in as the agent reads as it was at the session's start and
//! at its end, by position or by time; a lead handed to someone else since is in
//! the first agent's past and not in their present; a lead erased since reads as
//! erased at every moment; an agent sees only their own past; bad moments and
//! other sites' users are refused. (That the past views equal the projections at
//! every position of a random history is `projection_equivalence`.)

mod support;

use crm::app::past::At;
use crm::app::reads::LeadQuery;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(
    an_admins_session_reads_as_the_agent_saw_it_at_its_start_and_end,
    a_lead_handed_over_or_erased_since_reads_as_the_past_and_the_erasure_say,
    an_agent_sees_only_their_own_past_and_bad_moments_are_refused,
    the_role_then_and_whole_batches_decide_what_the_past_shows,
    a_second_servers_writes_are_in_the_past_at_their_position,
);

async fn head(api: &Api) -> i64 {
    support::head(&api.app).await.0
}

/// The phones of a past Lead Manager's items, by lead name.
fn phones(page: &Value) -> Vec<(String, Value)> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap_or("").to_owned(),
                l["phone"].clone(),
            )
        })
        .collect()
}

async fn an_admins_session_reads_as_the_agent_saw_it_at_its_start_and_end(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let dana = api
        .post(
            &agent,
            "/api/leads",
            json!({"name": "Dana Novak", "phone": "+1 555 0100"}),
        )
        .await
        .id();
    let before_session = head(&api).await;

    let admin = api.login("admin@demo.example").await;
    let started = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "Tidy up Dana"}),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let session = started.body["impersonation"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = api
        .patch(
            &admin,
            &format!("/api/leads/{dana}"),
            json!({"phone": "+1 555 0199", "stage": "contacted"}),
            None,
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let note = api
        .post(
            &admin,
            &format!("/api/leads/{dana}/notes"),
            json!({"body": "Prefers email"}),
        )
        .await;
    assert_eq!(note.status, 201, "{}", note.body);
    let settings = api
        .patch(
            &admin,
            "/api/settings",
            json!({"email_signature": "Dana's agent"}),
            None,
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.body);
    let template = api
        .post(
            &admin,
            "/api/templates",
            json!({"kind": "text", "name": "Follow-up", "body": "Still looking?"}),
        )
        .await;
    assert_eq!(template.status, 201, "{}", template.body);
    let last_change = head(&api).await;
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);
    let after_session = head(&api).await;
    // The agent works on after the session.
    let later = api
        .patch(
            &agent,
            &format!("/api/leads/{dana}"),
            json!({"phone": "+1 555 0142"}),
            None,
        )
        .await;
    assert_eq!(later.status, 200, "{}", later.body);

    let view =
        |path: &str, at: &str| format!("/api/audit/view/{path}?subject_id={}&at={at}", s.agent1.id);
    // Before the session: the phone as the agent had it, no note, no template.
    let then = api
        .get(&admin, &view("leads", &before_session.to_string()))
        .await;
    assert_eq!(then.status, 200, "{}", then.body);
    assert_eq!(then.body["position"], before_session);
    assert_eq!(then.body["subject_id"], s.agent1.id.to_string());
    assert_eq!(
        phones(&then.body),
        [("Dana Novak".to_owned(), json!("+1 555 0100"))]
    );
    assert_eq!(then.body["counts_by_stage"]["new"], 1);
    assert_eq!(
        then.header("x-chain-intact"),
        Some("true"),
        "an audit answer"
    );
    let lead_then = api
        .get(
            &admin,
            &view(&format!("leads/{dana}"), &before_session.to_string()),
        )
        .await;
    assert_eq!(lead_then.status, 200, "{}", lead_then.body);
    assert_eq!(lead_then.body["phone"], "+1 555 0100");
    assert_eq!(lead_then.body["stage"], "new");
    assert_eq!(lead_then.body["notes"], json!([]));
    let settings_then = api
        .get(&admin, &view("settings", &before_session.to_string()))
        .await;
    assert_eq!(settings_then.status, 200, "{}", settings_then.body);
    assert_eq!(settings_then.body["settings"]["email_signature"], "");
    assert_eq!(settings_then.body["templates"], json!([]));

    // At the session's end: what the admin left.
    let at_end = api
        .get(&admin, &view("leads", &after_session.to_string()))
        .await;
    assert_eq!(
        phones(&at_end.body),
        [("Dana Novak".to_owned(), json!("+1 555 0199"))]
    );
    assert_eq!(at_end.body["counts_by_stage"]["contacted"], 1);
    let lead_end = api
        .get(
            &admin,
            &view(&format!("leads/{dana}"), &after_session.to_string()),
        )
        .await;
    assert_eq!(lead_end.body["stage"], "contacted");
    assert_eq!(lead_end.body["notes"][0]["body"], "Prefers email");
    assert_eq!(
        lead_end.body["notes"][0]["author_id"],
        s.agent1.id.to_string()
    );
    let settings_end = api
        .get(&admin, &view("settings", &after_session.to_string()))
        .await;
    assert_eq!(
        settings_end.body["settings"]["email_signature"],
        "Dana's agent"
    );
    assert_eq!(settings_end.body["templates"][0]["name"], "Follow-up");

    // The same moments named by the session's times.
    let detail = api
        .get(&admin, &format!("/api/audit/impersonations/{session}"))
        .await;
    let (start, end) = (
        detail.body["started_at"].as_str().unwrap().to_owned(),
        detail.body["ended_at"].as_str().unwrap().to_owned(),
    );
    let by_time = api.get(&admin, &view("leads", &urlencoding(&start))).await;
    assert_eq!(by_time.status, 200, "{}", by_time.body);
    // The start's own events (the session, the agent's notice) change no screen.
    let start_position = by_time.body["position"].as_i64().unwrap();
    assert!(
        (before_session + 1..after_session).contains(&start_position),
        "{start_position}: the session's start"
    );
    assert_eq!(phones(&by_time.body), phones(&then.body));
    let by_time = api.get(&admin, &view("leads", &urlencoding(&end))).await;
    // The end's time is taken as it is recorded: the session's last change, or
    // its end itself.
    let end_position = by_time.body["position"].as_i64().unwrap();
    assert!(
        (last_change..=after_session).contains(&end_position),
        "{end_position}: the session's end"
    );
    assert_eq!(phones(&by_time.body), phones(&at_end.body));
    // Before the agent's account existed, there is no screen of theirs. Now (no
    // `at`): the present.
    api.get(&admin, &view("leads", "2001-01-01T00:00:00Z"))
        .await
        .problem(404, "not_found");
    api.get(&admin, &view("settings", "1"))
        .await
        .problem(404, "not_found");
    let now = api
        .get(
            &admin,
            &format!("/api/audit/view/leads?subject_id={}", s.agent1.id),
        )
        .await;
    assert_eq!(
        phones(&now.body),
        [("Dana Novak".to_owned(), json!("+1 555 0142"))]
    );
    assert_eq!(now.body["position"], head(&api).await);
    // Reading the past appends nothing: no view is recorded outside a session.
    let at = head(&api).await;
    api.get(&admin, &view(&format!("leads/{dana}"), "1")).await;
    assert_eq!(head(&api).await, at);
}

/// A write made through another server on the same database is in the past view
/// at its position, exactly as that server's Lead Manager shows it.
async fn a_second_servers_writes_are_in_the_past_at_their_position(db: &TestDatabase) {
    let one = support::app(db).await;
    let two = support::app(db).await;
    let s = support::site(&one, "Demo Realty", "demo.example").await;
    let (lead, _) = two
        .create_lead(&s.agent1.ctx, support::new_lead("Dana Novak"))
        .await
        .unwrap();
    let at = support::head(&two).await;
    let past = one
        .past_leads(
            &s.owner.ctx,
            Some(s.agent1.id),
            Some(At::Position(at)),
            LeadQuery::default(),
            None,
            50,
        )
        .await
        .unwrap();
    assert_eq!(past.position, at.0);
    assert_eq!(past.page.items[0].id, lead.as_uuid());
    let live = two
        .leads(&s.agent1.ctx, LeadQuery::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(past.page, live);
}

/// Hex of `text`'s bytes (how cursors travel).
fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

async fn the_role_then_and_whole_batches_decide_what_the_past_shows(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let owner = api.login("owner@demo.example").await;
    let auditor = api.login("auditor@demo.example").await;
    let lead = api
        .post(
            &agent1,
            "/api/leads",
            json!({"name": "Role Lead", "phone": "+1 555 0300"}),
        )
        .await
        .id();
    let as_agent = head(&api).await;
    let promoted = api
        .patch(
            &owner,
            &format!("/api/users/{}", s.agent2.id),
            json!({"role": "admin"}),
            None,
        )
        .await;
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    let as_admin = head(&api).await;
    let demoted = api
        .patch(
            &owner,
            &format!("/api/users/{}", s.agent2.id),
            json!({"role": "agent"}),
            None,
        )
        .await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    // agent2 could not open agent1's lead as an agent, could as an admin; asked
    // now, after being made an agent again, the answers stay as they were.
    let past = |at: i64| {
        format!(
            "/api/audit/view/leads/{lead}?subject_id={}&at={at}",
            s.agent2.id
        )
    };
    api.get(&auditor, &past(as_agent))
        .await
        .problem(404, "not_found");
    let opened = api.get(&auditor, &past(as_admin)).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(opened.body["name"], "Role Lead");

    // One write, two events (fields, then stage) in one batch: a position between
    // them names the batch's end, the state readers could see.
    let first = head(&api).await + 1;
    let edited = api
        .patch(
            &agent1,
            &format!("/api/leads/{lead}"),
            json!({"phone": "+1 555 0301", "stage": "contacted"}),
            None,
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    let end = head(&api).await;
    assert_eq!(end, first + 1, "two events");
    let inside = api
        .get(&agent1, &format!("/api/audit/view/leads/{lead}?at={first}"))
        .await;
    assert_eq!(inside.status, 200, "{}", inside.body);
    assert_eq!(inside.body["position"], end);
    assert_eq!(
        (inside.body["phone"].clone(), inside.body["stage"].clone()),
        (json!("+1 555 0301"), json!("contacted"))
    );
}

/// `text` for a query string (`+` and `:` of an RFC 3339 time).
fn urlencoding(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn a_lead_handed_over_or_erased_since_reads_as_the_past_and_the_erasure_say(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let owner = api.login("owner@demo.example").await;
    let kept = api
        .post(&agent1, "/api/leads", json!({"name": "Kept Lead"}))
        .await
        .id();
    let handed = api
        .post(&agent1, "/api/leads", json!({"name": "Handed Lead"}))
        .await
        .id();
    let erased = api
        .post(
            &agent1,
            "/api/leads",
            json!({"name": "Zed Erasable", "email": "zed@example.com", "phone": "+1 555 0777"}),
        )
        .await
        .id();
    let note = api
        .post(
            &agent1,
            &format!("/api/leads/{erased}/notes"),
            json!({"body": "Lives on Elm Street"}),
        )
        .await;
    assert_eq!(note.status, 201, "{}", note.body);
    let before = head(&api).await;
    let assigned = api
        .post(
            &owner,
            &format!("/api/leads/{handed}/assign"),
            json!({"agent_id": s.agent2.id}),
        )
        .await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    let erasure = api
        .post(
            &owner,
            &format!("/api/leads/{erased}/erase"),
            json!({"reason": "Asked to be forgotten"}),
        )
        .await;
    assert_eq!(erasure.status, 200, "{}", erasure.body);

    // agent1's own past, sorted by name: all three then, one of them erased since.
    let then = api
        .get(
            &agent1,
            &format!("/api/audit/view/leads?at={before}&sort=name"),
        )
        .await;
    assert_eq!(then.status, 200, "{}", then.body);
    let items = then.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{}", then.body);
    let erased_then = items.iter().find(|l| l["id"] == erased.as_str()).unwrap();
    assert_eq!(erased_then["erased"], true);
    assert_eq!(erased_then["name"], Value::Null);
    assert_eq!(erased_then["email"], Value::Null);
    assert_eq!(erased_then["phone"], Value::Null);
    assert!(
        !then.body.to_string().contains("Zed") && !then.body.to_string().contains("0777"),
        "no personal value of an erased lead: {}",
        then.body
    );
    let lead = api
        .get(
            &agent1,
            &format!("/api/audit/view/leads/{erased}?at={before}"),
        )
        .await;
    assert_eq!(lead.status, 200, "{}", lead.body);
    assert_eq!(lead.body["notes"][0]["body"], Value::Null);
    assert!(!lead.body.to_string().contains("Elm"), "{}", lead.body);

    // Now: the handed lead is agent2's, in agent2's present and not agent1's.
    let now = api.get(&agent1, "/api/audit/view/leads").await;
    let names: Vec<&str> = now.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(names, ["Kept Lead"], "{}", now.body);
    let _ = kept;
    let handed_then = api
        .get(
            &agent1,
            &format!("/api/audit/view/leads/{handed}?at={before}"),
        )
        .await;
    assert_eq!(handed_then.status, 200, "{}", handed_then.body);
    api.get(&agent1, &format!("/api/audit/view/leads/{handed}"))
        .await
        .problem(404, "not_found");
    let agent2_now = api
        .get(
            &owner,
            &format!("/api/audit/view/leads?subject_id={}", s.agent2.id),
        )
        .await;
    assert_eq!(agent2_now.body["items"][0]["id"], handed.as_str());
    let agent2_then = api
        .get(
            &owner,
            &format!(
                "/api/audit/view/leads?subject_id={}&at={before}",
                s.agent2.id
            ),
        )
        .await;
    assert_eq!(agent2_then.body["items"], json!([]));
}

async fn an_agent_sees_only_their_own_past_and_bad_moments_are_refused(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let other = support::site(&api.app, "Rival Homes", "rival.example").await;
    let agent1 = api.login("agent1@demo.example").await;
    let admin = api.login("admin@demo.example").await;
    let auditor = api.login("auditor@demo.example").await;
    let lead = api
        .post(&agent1, "/api/leads", json!({"name": "Own Lead"}))
        .await
        .id();
    let at = head(&api).await;

    // Someone else's past is the audit's.
    api.get(
        &agent1,
        &format!("/api/audit/view/leads?subject_id={}", s.agent2.id),
    )
    .await
    .problem(403, "forbidden");
    api.get(
        &agent1,
        &format!("/api/audit/view/settings?subject_id={}", s.admin.id),
    )
    .await
    .problem(403, "forbidden");
    let own = api
        .get(
            &agent1,
            &format!("/api/audit/view/leads?subject_id={}", s.agent1.id),
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    let audited = api
        .get(
            &auditor,
            &format!("/api/audit/view/leads/{lead}?subject_id={}", s.agent1.id),
        )
        .await;
    assert_eq!(audited.status, 200, "{}", audited.body);
    // Another site's user is not found, for the audit's readers too.
    for token in [&admin, &auditor] {
        api.get(
            token,
            &format!("/api/audit/view/leads?subject_id={}", other.agent1.id),
        )
        .await
        .problem(404, "not_found");
    }
    // Never while logged in as someone.
    let started = api
        .post(
            &admin,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "look", "mode": "view"}),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    api.get(&admin, "/api/audit/view/leads")
        .await
        .problem(403, "impersonation_forbidden");
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);

    // Bad moments and queries.
    let past_head = head(&api).await + 1;
    for (query, field) in [
        ("at=yesterday".to_owned(), "at"),
        ("at=-3".to_owned(), "at"),
        (format!("at={past_head}"), "at"),
        ("at=99999999999999999999".to_owned(), "at"),
        ("sort=sideways".to_owned(), "sort"),
        ("stage=nowhere".to_owned(), "stage"),
    ] {
        let reply = api
            .get(&admin, &format!("/api/audit/view/leads?{query}"))
            .await;
        reply.problem(422, "validation");
        assert!(
            reply.body.to_string().contains(field),
            "{query}: {}",
            reply.body
        );
    }
    // NUL in a text filter or a cursor: refused, as in the live Lead Manager.
    let nul_cursor = hex_of(r#"["a\u0000", "00000000-0000-0000-0000-000000000000"]"#);
    for path in [
        "/api/leads?q=%00".to_owned(),
        "/api/audit/view/leads?q=%00".to_owned(),
        "/api/audit/view/leads?tag=a%00b".to_owned(),
        format!("/api/leads?sort=name&cursor={nul_cursor}"),
        format!("/api/audit/view/leads?sort=name&cursor={nul_cursor}"),
    ] {
        let reply = api.get(&admin, &path).await;
        assert_eq!(reply.status, 422, "{path}: {}", reply.body);
    }
    for query in ["scope=site", "subject_id=nobody", "cursor=zz"] {
        let reply = api
            .get(&admin, &format!("/api/audit/view/leads?{query}"))
            .await;
        assert!(
            [400, 422].contains(&reply.status),
            "{query}: {} {}",
            reply.status,
            reply.body
        );
    }
    api.get(
        &admin,
        &format!("/api/audit/view/leads/{}?at={at}", uuid::Uuid::now_v7()),
    )
    .await
    .problem(404, "not_found");
    api.get(&admin, "/api/audit/view/leads/not-a-lead")
        .await
        .problem(404, "not_found");
    // A lead that did not exist yet.
    api.get(&admin, &format!("/api/audit/view/leads/{lead}?at=1"))
        .await
        .problem(404, "not_found");
}
