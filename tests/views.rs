//! What a "Log in as user" session saw, on both backends: opening a lead's detail
//! while logged in as its agent (in either mode) appends `LeadViewed`, with the
//! admin as actor, the agent as subject and the session, and no personal data; the
//! session's page lists each view among its changes without counting it as one;
//! the exports carry it with a column that tells views from changes. Nobody's own
//! reading is recorded.

mod support;

use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api};

backend_tests!(
    opening_a_lead_while_logged_in_as_its_agent_is_recorded_and_exported,
    a_view_only_session_records_what_it_opened_and_nothing_else,
);

/// Starts a session of the admin `token` as `agent` in `mode`; its id.
async fn log_in_as(api: &Api, token: &str, agent: &str, mode: &str) -> String {
    let me = api
        .post(
            token,
            "/api/impersonation",
            json!({"user_id": agent, "reason": "Review the pipeline", "mode": mode}),
        )
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    me.body["impersonation"]["id"].as_str().unwrap().to_owned()
}

async fn session(api: &Api, token: &str, id: &str) -> Value {
    let detail = api
        .get(token, &format!("/api/audit/impersonations/{id}"))
        .await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    detail.body
}

/// The rows of `changes` that are views: (entity_id, entity_label).
fn views(changes: &Value) -> Vec<(String, String)> {
    changes
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "view")
        .map(|c| {
            assert_eq!(c["event_type"], "LeadViewed");
            assert_eq!(c["field"], "viewed");
            assert_eq!((&c["before"], &c["after"]), (&Value::Null, &Value::Null));
            (
                c["entity_id"].as_str().unwrap().to_owned(),
                c["entity_label"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn opening_a_lead_while_logged_in_as_its_agent_is_recorded_and_exported(db: &TestDatabase) {
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
    let omar = api
        .post(&agent, "/api/leads", json!({"name": "Omar Reyes"}))
        .await
        .id();
    let admin = api.login("admin@demo.example").await;
    let head = api.app.store().head().await.unwrap();
    // The agent's and the admin's own reading is not recorded.
    assert_eq!(
        api.get(&agent, &format!("/api/leads/{dana}")).await.status,
        200
    );
    assert_eq!(
        api.get(&admin, &format!("/api/leads/{dana}")).await.status,
        200
    );
    assert_eq!(api.app.store().head().await.unwrap(), head);

    let id = log_in_as(&api, &admin, &s.agent1.id.to_string(), "edit").await;
    for lead in [&dana, &omar, &dana] {
        let opened = api.get(&admin, &format!("/api/leads/{lead}")).await;
        assert_eq!(opened.status, 200, "{}", opened.body);
    }
    // A list is not a view of each lead; a lead not found is not a view either.
    assert_eq!(api.get(&admin, "/api/leads").await.status, 200);
    let elsewhere = uuid::Uuid::now_v7();
    assert_eq!(
        api.get(&admin, &format!("/api/leads/{elsewhere}"))
            .await
            .status,
        404
    );
    api.patch(
        &admin,
        &format!("/api/leads/{dana}"),
        json!({"stage": "contacted"}),
        None,
    )
    .await;
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);

    let detail = session(&api, &admin, &id).await;
    assert_eq!(
        views(&detail["changes"]),
        [
            (dana.clone(), "Dana Novak".to_owned()),
            (omar.clone(), "Omar Reyes".to_owned()),
            (dana.clone(), "Dana Novak".to_owned()),
        ]
    );
    for view in detail["changes"].as_array().unwrap() {
        assert_eq!(view["actor_id"], s.admin.id.to_string());
        assert_eq!(view["subject_id"], s.agent1.id.to_string());
        assert_eq!(view["impersonation_id"], id.as_str());
    }
    assert_eq!(detail["change_count"], 1, "views are not changes");
    let kinds: Vec<&str> = detail["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["view", "view", "view", "change"]);

    // Views or changes alone, in the list and the export.
    let only = |kind: &'static str| {
        let (api, admin, id) = (api.clone(), admin.clone(), id.clone());
        async move {
            let listed = api
                .get(
                    &admin,
                    &format!("/api/audit/changes?impersonation_id={id}&kind={kind}"),
                )
                .await;
            assert_eq!(listed.status, 200, "{}", listed.body);
            listed.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["kind"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(only("view").await, ["view", "view", "view"]);
    assert_eq!(only("change").await, ["change"]);
    api.get(&admin, "/api/audit/changes?kind=views")
        .await
        .problem(422, "validation");
    let viewed_csv = api
        .get(
            &admin,
            &format!("/api/audit/export?format=csv&impersonation_id={id}&kind=view"),
        )
        .await;
    assert_eq!(
        csv::Reader::from_reader(viewed_csv.raw.as_slice())
            .records()
            .count(),
        3
    );

    // The events: on the session's views stream, nothing personal in them.
    let events = api
        .get(&admin, &format!("/api/events?after={head}&limit=500"))
        .await;
    let viewed: Vec<&Value> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "LeadViewed")
        .collect();
    assert_eq!(viewed.len(), 3);
    for event in viewed {
        assert_eq!(event["stream_type"], "views", "{event}");
        assert_eq!(event["stream_id"], id.as_str(), "{event}");
        let keys: Vec<&String> = event["payload"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["lead_id"], "{event}");
    }

    // The session's export: a kind column, last, tells views from changes.
    let csv = api
        .get(
            &admin,
            &format!("/api/audit/export?format=csv&impersonation_id={id}"),
        )
        .await;
    assert_eq!(csv.status, 200);
    let mut reader = csv::Reader::from_reader(csv.raw.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.iter().next_back(), Some("kind"));
    let rows: Vec<(String, String, String)> = reader
        .records()
        .map(Result::unwrap)
        .map(|r| {
            (
                r.get(headers.len() - 1).unwrap().to_owned(),
                r.get(5).unwrap().to_owned(),
                r.get(6).unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(headers.get(5), Some("entity_label"));
    assert_eq!(
        rows,
        [
            ("view".into(), "Dana Novak".into(), "viewed".into()),
            ("view".into(), "Omar Reyes".into(), "viewed".into()),
            ("view".into(), "Dana Novak".into(), "viewed".into()),
            ("change".into(), "Dana Novak".into(), "stage".into()),
        ]
    );
    let ndjson = api
        .get(
            &admin,
            &format!("/api/audit/export?format=ndjson&impersonation_id={id}"),
        )
        .await;
    let kinds: Vec<String> = String::from_utf8(ndjson.raw)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["view", "view", "view", "change"]);

    // Erased, the lead's views name it as erased; the log still verifies.
    let erased = api
        .post(
            &admin,
            &format!("/api/leads/{dana}/erase"),
            json!({"reason": "erasure request #12"}),
        )
        .await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    let labels: Vec<String> = views(&session(&api, &admin, &id).await["changes"])
        .into_iter()
        .map(|(_, label)| label)
        .collect();
    assert_eq!(labels, ["[erased]", "Omar Reyes", "[erased]"]);
    let verify = api.get(&admin, "/api/audit/verify").await;
    assert_eq!(verify.body["ok"], true, "{}", verify.body);
}

async fn a_view_only_session_records_what_it_opened_and_nothing_else(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent = api.login("agent1@demo.example").await;
    let dana = api
        .post(&agent, "/api/leads", json!({"name": "Dana Novak"}))
        .await
        .id();
    let owner = api.login("owner@demo.example").await;
    // A mode that is not one is refused, never read as the default.
    for mode in [json!(null), json!("VIEW"), json!(""), json!(1)] {
        api.post(
            &owner,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "r", "mode": mode}),
        )
        .await
        .problem(422, "validation");
    }
    let id = log_in_as(&api, &owner, &s.agent1.id.to_string(), "view").await;
    let opened = api.get(&owner, &format!("/api/leads/{dana}")).await;
    assert_eq!(opened.body["name"], "Dana Novak");
    let head = api.app.store().head().await.unwrap();
    api.post(
        &owner,
        &format!("/api/leads/{dana}/notes"),
        json!({"body": "should not be written"}),
    )
    .await
    .problem(403, "impersonation_read_only");
    api.patch(
        &owner,
        "/api/settings",
        json!({"timezone": "Europe/Paris"}),
        None,
    )
    .await
    .problem(403, "impersonation_read_only");
    assert_eq!(api.app.store().head().await.unwrap(), head);
    assert_eq!(api.delete(&owner, "/api/impersonation").await.status, 200);

    let detail = session(&api, &owner, &id).await;
    assert_eq!(detail["mode"], "view");
    assert_eq!(detail["change_count"], 0);
    assert_eq!(
        views(&detail["changes"]),
        [(dana.clone(), "Dana Novak".to_owned())]
    );
    assert_eq!(detail["changes"].as_array().unwrap().len(), 1);
}
