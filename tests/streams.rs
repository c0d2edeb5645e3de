//! Nothing outlives a revocation, on both backends: an open event stream ends,
//! saying why, once its session signs out, expires, is deactivated, logs in as
//! someone or loses the right; none of the events appended after that reach it.
//! An audit export stops short the same way.

mod support;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use chrono::Duration as Span;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use http_body_util::BodyExt;
use serde_json::json;
use support::http::{demo, Api};
use support::*;

backend_tests!(
    an_event_stream_ends_when_its_session_ends_or_loses_the_right,
    an_idle_event_stream_ends_within_seconds_of_its_sessions_expiry,
    an_audit_export_stops_when_its_session_ends,
);

/// An open `GET /api/events/stream`, read as text.
struct Stream {
    body: Body,
    text: String,
}

impl Stream {
    async fn open(api: &Api, token: &str, after: i64) -> Self {
        let request = Request::get(format!("/api/events/stream?after={after}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(api.router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Self {
            body: response.into_body(),
            text: String::new(),
        }
    }

    /// Reads until `done` holds of what arrived, or the stream ends, or `seconds`
    /// pass; answers whether the stream ended.
    async fn read_until(&mut self, seconds: u64, done: impl Fn(&str) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while !done(&self.text) {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(frame)) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.text.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            }
        }
        false
    }

    fn positions(&self) -> Vec<i64> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|id| id.parse().unwrap())
            .collect()
    }

    /// The reason of the closing `event: end`.
    fn end_reason(&self) -> Option<String> {
        let at = self.text.find("event: end\n")?;
        let data = self.text[at..]
            .lines()
            .find_map(|l| l.strip_prefix("data: "))?;
        let data: serde_json::Value = serde_json::from_str(data).unwrap();
        data["reason"].as_str().map(str::to_owned)
    }
}

async fn an_event_stream_ends_when_its_session_ends_or_loses_the_right(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let owner = s.owner.token.clone();
    let admin_path = format!("/api/users/{}", s.admin.id);
    for (case, reason) in [
        ("signs out", "logged_out"),
        ("is deactivated", "deactivated"),
        ("is demoted to agent", "forbidden"),
        ("logs in as an agent", "impersonation"),
        ("expires", "expired"),
    ] {
        let admin = login(&api.app, "admin@demo.example").await;
        let mut stream = Stream::open(&api, &admin.token, head(&api.app).await.0).await;
        // Live: an event appended now arrives.
        let before = lead_of(&api.app, &s.agent1.ctx, "Before the end").await;
        let live = head(&api.app).await.0;
        assert!(
            !stream
                .read_until(10, |t| t.contains(&format!("id: {live}\n")))
                .await,
            "{case}: the stream is live"
        );
        assert!(stream.text.contains(&before.to_string()));

        match case {
            "signs out" => {
                api.post(&admin.token, "/api/logout", json!({})).await;
            }
            "is deactivated" => {
                api.patch(&owner, &admin_path, json!({"active": false}), None)
                    .await;
            }
            "is demoted to agent" => {
                api.patch(&owner, &admin_path, json!({"role": "agent"}), None)
                    .await;
            }
            "logs in as an agent" => {
                api.post(
                    &admin.token,
                    "/api/impersonation",
                    json!({"user_id": s.agent1.id, "reason": "Help"}),
                )
                .await;
            }
            _ => api.app.clock().advance(Span::hours(13)),
        }
        let revoked_at = head(&api.app).await.0;
        // Appended after the revocation: none of it may reach the stream.
        let mut after = Vec::new();
        for i in 0..3 {
            after.push(lead_of(&api.app, &s.agent1.ctx, &format!("After the end {i}")).await);
        }
        let ended = stream.read_until(10, |t| t.contains("event: end\n")).await;
        assert!(
            stream.end_reason().is_some() || ended,
            "{case}: the stream ends: {}",
            stream.text
        );
        assert_eq!(stream.end_reason().as_deref(), Some(reason), "{case}");
        assert!(
            stream.positions().iter().all(|p| *p <= revoked_at),
            "{case}: nothing appended after the revocation: {:?} after {revoked_at}",
            stream.positions()
        );
        for lead in after {
            assert!(!stream.text.contains(&lead.to_string()), "{case}");
        }
        // And then it is over.
        assert!(stream.read_until(5, |_| false).await, "{case}: closed");

        // Put the admin back for the next case.
        match case {
            "is deactivated" => {
                api.patch(&owner, &admin_path, json!({"active": true}), None)
                    .await;
            }
            "is demoted to agent" => {
                api.patch(&owner, &admin_path, json!({"role": "admin"}), None)
                    .await;
            }
            _ => {}
        }
    }
}

async fn an_idle_event_stream_ends_within_seconds_of_its_sessions_expiry(db: &TestDatabase) {
    let (api, _) = demo(db).await;
    let admin = login(&api.app, "admin@demo.example").await;
    let mut stream = Stream::open(&api, &admin.token, head(&api.app).await.0).await;
    // The session expires, and nothing is appended: no event wakes the stream,
    // the periodic re-check ends it.
    api.app.clock().advance(Span::hours(13));
    let waited = std::time::Instant::now();
    stream.read_until(9, |t| t.contains("event: end\n")).await;
    assert_eq!(
        stream.end_reason().as_deref(),
        Some("expired"),
        "{}",
        stream.text
    );
    assert!(waited.elapsed() <= Duration::from_secs(7));
}

async fn an_audit_export_stops_when_its_session_ends(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    // Enough changes for several pages of 1,000.
    for i in 0..700 {
        lead_of(&api.app, &s.agent1.ctx, &format!("Exported {i}")).await;
    }
    let auditor = login(&api.app, "auditor@demo.example").await;
    let request = Request::get("/api/audit/export?format=ndjson")
        .header("authorization", format!("Bearer {}", auditor.token))
        .body(Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(api.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    api.post(&auditor.token, "/api/logout", json!({})).await;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received.extend(frame.into_data().map(|d| d.to_vec()).unwrap_or_default()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the transfer stops short");
    let rows = received
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(rows <= 1_000, "no page after the sign-out: {rows} rows");
    // A whole export, for a session that stays, has every page.
    let whole = api
        .get(&s.auditor.token, "/api/audit/export?format=ndjson")
        .await;
    assert!(
        whole
            .raw
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            > 2_000
    );
}
