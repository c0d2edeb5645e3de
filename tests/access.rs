//! Who may call what, on both backends: login throttling, and sessions that end
//! when they should.

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use chrono::Duration;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::json;
use support::http::{Api, Reply};
use support::*;

backend_tests!(repeated_failed_logins_wait_with_retry_after_then_the_right_password_works,);

async fn api(db: &TestDatabase) -> (Api, Site) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    (Api::new(app), s)
}

/// `POST /api/login` from a client address.
async fn login_from(api: &Api, client: [u8; 4], email: &str, password: &str) -> Reply {
    let mut request = Request::post("/api/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"email": email, "password": password}).to_string(),
        ))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((client, 40_000))));
    api.send(request).await
}

fn retry_after(reply: &Reply) -> i64 {
    reply.problem(429, "rate_limited");
    reply
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a Retry-After in seconds: {:?}", reply.headers))
}

async fn repeated_failed_logins_wait_with_retry_after_then_the_right_password_works(
    db: &TestDatabase,
) {
    let (api, s) = api(db).await;
    let clock = api.app.clock().clone();
    let (a, b, c) = ([192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]);
    let before = head(&api.app).await;

    // One account: five wrong passwords, then even the right one waits.
    for _ in 0..5 {
        login_from(&api, a, &s.agent1.email, "wrong-password")
            .await
            .problem(401, "unauthenticated");
    }
    let refused = login_from(&api, a, &s.agent1.email, PASSWORD).await;
    let wait = retry_after(&refused);
    assert_eq!(wait, 30);
    // From another client, and in other case, it is the same account.
    let wait_b = retry_after(&login_from(&api, b, &s.agent1.email.to_uppercase(), PASSWORD).await);
    assert!(wait_b <= wait);
    // Another account is not held up.
    assert_eq!(
        login_from(&api, a, &s.agent2.email, PASSWORD).await.status,
        200
    );
    // Nothing was appended for the refused attempts (a login appends UserLoggedIn).
    assert_eq!(head(&api.app).await.0, before.0 + 1);

    // Just before the wait is over, still refused; after it, the right password works.
    clock.advance(Duration::seconds(wait - 1));
    retry_after(&login_from(&api, a, &s.agent1.email, PASSWORD).await);
    clock.advance(Duration::seconds(1));
    let signed_in = login_from(&api, a, &s.agent1.email, PASSWORD).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    // The success started the account afresh: one wrong password is a plain 401.
    login_from(&api, a, &s.agent1.email, "wrong-password")
        .await
        .problem(401, "unauthenticated");
    assert_eq!(
        login_from(&api, a, &s.agent1.email, PASSWORD).await.status,
        200
    );

    // Each further failure after the first wait doubles it.
    for _ in 0..5 {
        login_from(&api, c, &s.auditor.email, "wrong-password").await;
    }
    assert_eq!(
        retry_after(&login_from(&api, c, &s.auditor.email, "x").await),
        30
    );
    clock.advance(Duration::seconds(30));
    login_from(&api, c, &s.auditor.email, "wrong-password")
        .await
        .problem(401, "unauthenticated");
    assert_eq!(
        retry_after(&login_from(&api, c, &s.auditor.email, PASSWORD).await),
        60
    );

    // One client guessing across many accounts waits after twenty failures, for
    // every account; other clients do not.
    let guesser = [198, 51, 100, 9];
    for i in 0..20 {
        login_from(&api, guesser, &format!("nobody{i}@demo.example"), "guess")
            .await
            .problem(401, "unauthenticated");
    }
    retry_after(&login_from(&api, guesser, &s.owner.email, PASSWORD).await);
    assert_eq!(
        login_from(&api, b, &s.owner.email, PASSWORD).await.status,
        200
    );
    clock.advance(Duration::seconds(30));
    assert_eq!(
        login_from(&api, guesser, &s.owner.email, PASSWORD)
            .await
            .status,
        200
    );
}
