//! `Idempotency-Key`, as the contract says it works, on both backends: a key is
//! the signed-in user's own (two users sending the same key each get their own
//! write, and never the other's answer); concurrent retries of one request make
//! one write; PATCH and DELETE retried append nothing; a refused request's answer
//! is replayed too; a retry after signing in again is recognised and appends
//! nothing; a view-only session is neither given a write's kept answer nor runs a
//! reserved one again.

mod support;

use axum::http::Method;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api, Reply};

backend_tests!(
    two_users_with_the_same_key_each_get_their_own_write,
    concurrent_retries_of_one_request_make_one_write,
    patch_and_delete_retried_append_nothing,
    a_refused_request_is_replayed_as_refused,
    a_retry_after_signing_in_again_appends_nothing,
    a_view_only_session_is_given_no_answer_kept_for_a_write,
);

async fn with_key(
    api: &Api,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
    key: &str,
) -> Reply {
    api.call(
        method,
        path,
        Some(token),
        body.as_ref(),
        &[("idempotency-key", key)],
    )
    .await
}

async fn head(api: &Api) -> i64 {
    support::head(&api.app).await.0
}

async fn two_users_with_the_same_key_each_get_their_own_write(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let agent2 = api.login("agent2@demo.example").await;
    let first = with_key(
        &api,
        Method::POST,
        &agent1,
        "/api/leads",
        Some(json!({"name": "Ann Buyer"})),
        "create-1",
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The same key and the same body from someone else: their own new lead.
    let second = with_key(
        &api,
        Method::POST,
        &agent2,
        "/api/leads",
        Some(json!({"name": "Ann Buyer"})),
        "create-1",
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), None);
    assert_ne!(second.id(), first.id(), "not agent1's lead");
    assert_eq!(
        second.body["assigned_agent_id"].as_str(),
        api.get(&agent2, "/api/me").await.body["user"]["id"].as_str()
    );
    // Each one's retry gets their own answer back.
    for (token, reply) in [(&agent1, &first), (&agent2, &second)] {
        let again = with_key(
            &api,
            Method::POST,
            token,
            "/api/leads",
            Some(json!({"name": "Ann Buyer"})),
            "create-1",
        )
        .await;
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.id(), reply.id());
    }
    // agent2 cannot read agent1's lead through the key either.
    let other = with_key(
        &api,
        Method::POST,
        &agent2,
        "/api/leads",
        Some(json!({"name": "Someone Else"})),
        "create-1",
    )
    .await;
    other.problem(409, "conflict");
    assert!(!other.raw.windows(36).any(|w| w == first.id().as_bytes()));
}

async fn concurrent_retries_of_one_request_make_one_write(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let before = head(&api).await;
    let tries = (0..8).map(|_| {
        with_key(
            &api,
            Method::POST,
            &agent1,
            "/api/leads",
            Some(json!({"name": "Raced Lead"})),
            "race-1",
        )
    });
    let replies = futures_util::future::join_all(tries).await;
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(Reply::id)
        .collect();
    assert_eq!(ids.len(), 1, "one lead: {replies:?}");
    for reply in &replies {
        assert!(
            reply.status == 201 || reply.status == 409,
            "{} {}",
            reply.status,
            reply.body
        );
    }
    let leads = api.get(&agent1, "/api/leads?q=Raced").await;
    assert_eq!(leads.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(head(&api).await, before + 1, "one event appended");
}

async fn patch_and_delete_retried_append_nothing(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let lead = api
        .post(&agent1, "/api/leads", json!({"name": "Patched Lead"}))
        .await
        .id();
    let path = format!("/api/leads/{lead}");
    let patch = || {
        with_key(
            &api,
            Method::PATCH,
            &agent1,
            &path,
            Some(json!({"phone": "+1 555 0123"})),
            "patch-1",
        )
    };
    let first = patch().await;
    assert_eq!(first.status, 200, "{}", first.body);
    let after_first = head(&api).await;
    let again = patch().await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(head(&api).await, after_first);

    let delete = || with_key(&api, Method::DELETE, &agent1, &path, None, "delete-1");
    assert_eq!(delete().await.status, 204);
    let after_delete = head(&api).await;
    let again = delete().await;
    assert_eq!(again.status, 204);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(head(&api).await, after_delete);
}

async fn a_refused_request_is_replayed_as_refused(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let before = head(&api).await;
    let bad = || {
        with_key(
            &api,
            Method::POST,
            &agent1,
            "/api/leads",
            Some(json!({"name": ""})),
            "bad-1",
        )
    };
    let first = bad().await;
    first.problem(422, "validation");
    let again = bad().await;
    again.problem(422, "validation");
    assert_eq!(again.body, first.body);
    assert_eq!(head(&api).await, before, "nothing appended");
}

async fn a_retry_after_signing_in_again_appends_nothing(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let first_session = api.login("agent1@demo.example").await;
    let created = with_key(
        &api,
        Method::POST,
        &first_session,
        "/api/leads",
        Some(json!({"name": "Signed In Twice"})),
        "signin-1",
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let after = head(&api).await;
    // The answer was lost; the client signs in again and retries.
    let second_session = api.login("agent1@demo.example").await;
    let after_sign_in = head(&api).await;
    assert!(after_sign_in > after, "the sign-in is recorded");
    let retried = with_key(
        &api,
        Method::POST,
        &second_session,
        "/api/leads",
        Some(json!({"name": "Signed In Twice"})),
        "signin-1",
    )
    .await;
    assert!(
        retried.status == 201 || retried.status == 200,
        "{} {}",
        retried.status,
        retried.body
    );
    assert_eq!(retried.id(), created.id(), "the same lead");
    assert_eq!(head(&api).await, after_sign_in, "nothing appended");
    let leads = api.get(&second_session, "/api/leads?q=Signed").await;
    assert_eq!(leads.body["items"].as_array().unwrap().len(), 1);
}

/// A write made with a key in a "Log in as user" session, retried with the same key
/// in a view-only session of the same sign-in: refused as read only, not replayed as
/// a success; its key reserved without an answer (the first attempt committed, its
/// answer was lost), the view-only retry is refused without running again, and a
/// retry that may write still gets the first outcome.
async fn a_view_only_session_is_given_no_answer_kept_for_a_write(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let agent1 = api.login("agent1@demo.example").await;
    let lead = api
        .post(&agent1, "/api/leads", json!({"name": "Dana Novak"}))
        .await
        .id();
    let admin = api.login("admin@demo.example").await;
    let start = |mode: &'static str| {
        let (api, admin) = (api.clone(), admin.clone());
        async move {
            let started = api
                .post(
                    &admin,
                    "/api/impersonation",
                    json!({"user_id": s.agent1.id, "reason": "retries", "mode": mode}),
                )
                .await;
            assert_eq!(started.status, 200, "{}", started.body);
        }
    };
    let path = format!("/api/leads/{lead}");
    let edit = |key: &'static str| {
        let (api, admin, path) = (api.clone(), admin.clone(), path.clone());
        async move {
            with_key(
                &api,
                Method::PATCH,
                &admin,
                &path,
                Some(json!({"phone": "+1 555 0199"})),
                key,
            )
            .await
        }
    };
    start("edit").await;
    let first = edit("k1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);

    start("view").await;
    let before = head(&api).await;
    edit("k1").await.problem(403, "impersonation_read_only");
    // The answer lost after the commit: the key is only reserved.
    let reserved = "UPDATE http_idempotency SET status = 0 WHERE key = 'k1'";
    crm_events::on_pool!(api.app.store().database(), |pool| {
        sqlx::query(reserved).execute(pool).await.unwrap();
    });
    let refused = edit("k1").await;
    refused.problem(403, "impersonation_read_only");
    assert_eq!(refused.header("idempotent-replayed"), None);
    assert_eq!(head(&api).await, before, "nothing appended");
    assert_eq!(api.delete(&admin, "/api/impersonation").await.status, 200);

    start("edit").await;
    let again = edit("k1").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["phone"], "+1 555 0199");
    assert_eq!(
        again.body["version"], first.body["version"],
        "the first outcome"
    );
}
