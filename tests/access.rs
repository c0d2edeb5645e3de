//! Who may call what, on both backends: every endpoint for every role, from its own
//! site and on another's, logged in as someone or not, against the contract (a
//! denied request appends nothing); sessions that end when they should; login
//! throttling.

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use chrono::Duration;
use crm_events::backend_tests;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::http::{demo, Api, Reply};
use support::*;
use tower::ServiceExt;

backend_tests!(
    every_endpoint_allows_and_denies_as_the_contract_says,
    a_token_stops_working_at_expiry_logout_and_deactivation_at_once,
    repeated_failed_logins_wait_with_retry_after_then_the_right_password_works,
);

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

/// A site's things, made through the API.
async fn things(api: &Api, s: &Site) -> Things {
    let lead = api
        .post(
            &s.agent1.token,
            "/api/leads",
            json!({"name": "Matrix Lead"}),
        )
        .await;
    let template = api
        .post(
            &s.agent1.token,
            "/api/templates",
            json!({"kind": "email", "name": "Welcome", "subject": "Hi", "body": "Welcome"}),
        )
        .await;
    let owner = api.login(&s.owner.email).await;
    let started = api
        .post(
            &owner,
            "/api/impersonation",
            json!({"user_id": s.agent1.id, "reason": "a session to read"}),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    assert_eq!(api.delete(&owner, "/api/impersonation").await.status, 200);
    Things {
        agent1: s.agent1.id.to_string(),
        agent2: s.agent2.id.to_string(),
        lead: lead.id(),
        task: String::new(),
        template: template.id(),
        session: started.body["impersonation"]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

/// `text` with the things of `s` in it, making the fresh ones it names.
async fn fill(api: &Api, s: &Site, home: &Things, things: &Things, text: &str, n: usize) -> String {
    let mut text = text
        .replace("{home_agent1}", &home.agent1)
        .replace("{agent1}", &things.agent1)
        .replace("{agent2}", &things.agent2)
        .replace("{lead}", &things.lead)
        .replace("{task}", &things.task)
        .replace("{template}", &things.template)
        .replace("{session}", &things.session)
        .replace("{unique_email}", &format!("matrix{n}@demo.example"));
    if text.contains("{fresh_lead}") {
        let lead = api
            .post(
                &s.owner.token,
                "/api/leads",
                json!({"name": "Fresh", "assigned_agent_id": s.agent1.id}),
            )
            .await;
        text = text.replace("{fresh_lead}", &lead.id());
    }
    if text.contains("{fresh_template}") {
        let template = api
            .post(
                &s.agent1.token,
                "/api/templates",
                json!({"kind": "text", "name": "Fresh", "body": "x"}),
            )
            .await;
        text = text.replace("{fresh_template}", &template.id());
    }
    if text.contains("{fresh_task}") {
        let task = api
            .post(
                &s.agent1.token,
                &format!("/api/leads/{}/tasks", things.lead),
                json!({"title": "Fresh", "due_at": "2027-01-01T10:00:00Z"}),
            )
            .await;
        text = text.replace("{fresh_task}", &task.id());
    }
    text
}

/// A request's status and problem type; an event stream's body is not waited for.
async fn call(
    api: &Api,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json)
        }
        None => Body::empty(),
    };
    let request = request.body(body).unwrap();
    if path.starts_with("/api/events/stream") {
        let response = api.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            return (status, Value::Null);
        }
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        return (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        );
    }
    let reply = api.send(request).await;
    (reply.status, reply.body)
}

async fn every_endpoint_allows_and_denies_as_the_contract_says(db: &TestDatabase) {
    let (api, a) = demo(db).await;
    let b = site(&api.app, "Other Realty", "other.example").await;
    let (own_things, other_things) = (things(&api, &a).await, things(&api, &b).await);
    let logged_in_as_agent1 = |email: String, mode: &'static str| {
        let api = api.clone();
        let agent1 = a.agent1.id;
        async move {
            let token = api.login(&email).await;
            let started = api
                .post(
                    &token,
                    "/api/impersonation",
                    json!({"user_id": agent1, "reason": "matrix", "mode": mode}),
                )
                .await;
            assert_eq!(started.status, 200, "{}", started.body);
            assert_eq!(started.body["impersonation"]["mode"], mode);
            token
        }
    };
    let owner_as = logged_in_as_agent1(a.owner.email.clone(), "edit").await;
    let admin_as = logged_in_as_agent1(a.admin.email.clone(), "edit").await;
    let admin_views = logged_in_as_agent1(a.admin.email.clone(), "view").await;
    let token = |c: Caller| -> Option<String> {
        Some(match c {
            Caller::Anonymous => return None,
            Caller::Owner => a.owner.token.clone(),
            Caller::Admin => a.admin.token.clone(),
            Caller::Agent1 => a.agent1.token.clone(),
            Caller::Agent2 => a.agent2.token.clone(),
            Caller::Auditor => a.auditor.token.clone(),
            Caller::OwnerAsAgent1 => owner_as.clone(),
            Caller::AdminAsAgent1 => admin_as.clone(),
            Caller::AdminViewsAgent1 => admin_views.clone(),
        })
    };

    // Whom each caller's requests act as, and the human behind them.
    let people = |c: Caller| -> (String, String) {
        let id = |p: &support::Person| p.id.to_string();
        match c {
            Caller::Anonymous => (String::new(), String::new()),
            Caller::Owner => (id(&a.owner), id(&a.owner)),
            Caller::Admin => (id(&a.admin), id(&a.admin)),
            Caller::Agent1 => (id(&a.agent1), id(&a.agent1)),
            Caller::Agent2 => (id(&a.agent2), id(&a.agent2)),
            Caller::Auditor => (id(&a.auditor), id(&a.auditor)),
            Caller::OwnerAsAgent1 => (id(&a.agent1), id(&a.owner)),
            Caller::AdminAsAgent1 | Caller::AdminViewsAgent1 => (id(&a.agent1), id(&a.admin)),
        }
    };
    let agents = [a.agent1.id.to_string(), a.agent2.id.to_string()];

    let mut checked = 0;
    let mut wrong = Vec::new();
    for ep in endpoints() {
        for caller in Caller::ALL {
            for own in [true, false] {
                if !own && !ep.names_a_thing {
                    continue;
                }
                let (s, things) = if own {
                    (&a, &own_things)
                } else {
                    (&b, &other_things)
                };
                checked += 1;
                let path = fill(&api, s, &own_things, things, ep.path, checked).await;
                let body = match &ep.body {
                    Some(body) => {
                        Some(fill(&api, s, &own_things, things, &body.to_string(), checked).await)
                    }
                    None => None,
                };
                let expected = match caller {
                    Caller::Anonymous => UNAUTHENTICATED,
                    Caller::AdminViewsAgent1 => {
                        view_only(&ep, (ep.expect)(Caller::AdminAsAgent1, own))
                    }
                    _ => (ep.expect)(caller, own),
                };
                let token = token(caller);
                let before = head(&api.app).await;
                let (status, answer) =
                    call(&api, ep.method.clone(), &path, token.as_deref(), body).await;
                let what = format!(
                    "{} {} as {caller:?}{}",
                    ep.method,
                    ep.path,
                    if own { "" } else { " on another site" }
                );
                match expected {
                    Expect::Allowed if !(200..300).contains(&status) => {
                        wrong.push(format!("{what}: expected success, got {status} {answer}"));
                    }
                    Expect::Denied(want, kind) => {
                        if status != want || answer["type"] != kind {
                            wrong.push(format!(
                                "{what}: expected {want} {kind}, got {status} {answer}"
                            ));
                        }
                        if head(&api.app).await != before {
                            wrong.push(format!("{what}: denied, yet it appended"));
                        }
                    }
                    Expect::Allowed => {
                        let (mut subject, actor) = people(caller);
                        // Starting acts as agent1 from then on; returning, as oneself.
                        if ep.path == "/api/impersonation" {
                            subject = if ep.method == Method::POST {
                                agents[0].clone()
                            } else {
                                actor.clone()
                            };
                        }
                        if let Some(why) =
                            whose_data(&answer, &subject, &actor, &agents, &b.id.to_string())
                        {
                            wrong.push(format!("{what}: {why}: {answer}"));
                        }
                    }
                }
                // Put the caller back as it was.
                let token = token.as_deref().unwrap_or_default();
                if (200..300).contains(&status) && ep.path == "/api/impersonation" {
                    if ep.method == Method::POST {
                        assert_eq!(api.delete(token, "/api/impersonation").await.status, 200);
                    } else {
                        let mode = if caller == Caller::AdminViewsAgent1 {
                            "view"
                        } else {
                            "edit"
                        };
                        let again = api
                            .post(
                                token,
                                "/api/impersonation",
                                json!({"user_id": a.agent1.id, "reason": "matrix", "mode": mode}),
                            )
                            .await;
                        assert_eq!(again.status, 200, "{}", again.body);
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} requests answered against the contract:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[track_caller]
fn signed_out(reply: Reply) {
    reply.problem(401, "unauthenticated");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

async fn a_token_stops_working_at_expiry_logout_and_deactivation_at_once(db: &TestDatabase) {
    let (api, s) = demo(db).await;
    let clock = api.app.clock().clone();

    // Logout: that token at once, not the user's other sessions.
    let first = api.login(&s.agent1.email).await;
    let second = api.login(&s.agent1.email).await;
    assert_eq!(api.post(&first, "/api/logout", json!({})).await.status, 204);
    signed_out(api.get(&first, "/api/me").await);
    signed_out(api.post(&first, "/api/logout", json!({})).await);
    assert_eq!(api.get(&second, "/api/me").await.status, 200);

    // A token that was never issued, and a near miss of a real one.
    signed_out(api.get("0".repeat(64).as_str(), "/api/me").await);
    let mut near = second.clone();
    let last = if near.ends_with('0') { "1" } else { "0" };
    near.replace_range(near.len() - 1.., last);
    signed_out(api.get(&near, "/api/leads").await);

    // Deactivation: every session of the user at once, and no new one.
    let owner = api.login(&s.owner.email).await;
    let agent2 = api.login(&s.agent2.email).await;
    let user = format!("/api/users/{}", s.agent2.id);
    assert_eq!(
        api.patch(&owner, &user, json!({"active": false}), None)
            .await
            .status,
        200
    );
    signed_out(api.get(&agent2, "/api/me").await);
    signed_out(api.get(&s.agent2.token, "/api/leads").await);
    let refused = api
        .call(
            Method::POST,
            "/api/login",
            None,
            Some(&json!({"email": s.agent2.email, "password": PASSWORD})),
            &[],
        )
        .await;
    refused.problem(401, "unauthenticated");
    assert_eq!(
        api.patch(&owner, &user, json!({"active": true}), None)
            .await
            .status,
        200
    );
    signed_out(api.get(&agent2, "/api/me").await);
    assert_eq!(
        api.get(&api.login(&s.agent2.email).await, "/api/me")
            .await
            .status,
        200
    );

    // Expiry: twelve hours after sign-in, whatever the use in between.
    let fresh = api.login(&s.admin.email).await;
    clock.advance(Duration::hours(11) + Duration::minutes(59));
    assert_eq!(api.get(&fresh, "/api/me").await.status, 200);
    clock.advance(Duration::minutes(1));
    signed_out(api.get(&fresh, "/api/me").await);
    signed_out(api.get(&second, "/api/me").await);
}

async fn repeated_failed_logins_wait_with_retry_after_then_the_right_password_works(
    db: &TestDatabase,
) {
    let (api, s) = demo(db).await;
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

/// Whether what came back is the caller's to see, by the contract: nothing of the
/// other site, `me` naming whom the requests act as and the human behind them, and
/// every lead and every lead list of an agent (or of an admin logged in as one)
/// assigned to that agent. `None` when it is.
fn whose_data(
    answer: &Value,
    subject: &str,
    actor: &str,
    agents: &[String],
    other_site: &str,
) -> Option<String> {
    let text = answer.to_string();
    if text.contains("other.example") || text.contains(other_site) {
        return Some("another site's data came back".into());
    }
    let is_me = answer.get("user").is_some() && answer.get("actor").is_some();
    if is_me && (answer["user"]["id"] != subject || answer["actor"]["id"] != actor) {
        return Some(format!("`me` is not {subject} acted as by {actor}"));
    }
    let leads: Vec<&Value> = match answer.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .filter(|i| i.get("assigned_agent_id").is_some())
            .collect(),
        None => answer
            .get("assigned_agent_id")
            .map(|_| vec![answer])
            .unwrap_or_default(),
    };
    if agents.iter().any(|a| a == subject) {
        if let Some(lead) = leads.iter().find(|l| l["assigned_agent_id"] != subject) {
            return Some(format!("a lead of someone else came back: {}", lead["id"]));
        }
    }
    None
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Owner,
    Admin,
    Agent1,
    Agent2,
    Auditor,
    OwnerAsAgent1,
    AdminAsAgent1,
    /// Logged in as agent1 in "View only" mode.
    AdminViewsAgent1,
}

impl Caller {
    const ALL: [Self; 9] = [
        Self::Anonymous,
        Self::Owner,
        Self::Admin,
        Self::Agent1,
        Self::Agent2,
        Self::Auditor,
        Self::OwnerAsAgent1,
        Self::AdminAsAgent1,
        Self::AdminViewsAgent1,
    ];

    fn impersonating(self) -> bool {
        matches!(
            self,
            Self::OwnerAsAgent1 | Self::AdminAsAgent1 | Self::AdminViewsAgent1
        )
    }

    /// Owner or admin, acting as themselves.
    fn manager(self) -> bool {
        matches!(self, Self::Owner | Self::Admin)
    }

    /// Whom the requests act as is agent1 (the leads' and templates' owner).
    fn acts_as_agent1(self) -> bool {
        matches!(
            self,
            Self::Agent1 | Self::OwnerAsAgent1 | Self::AdminAsAgent1 | Self::AdminViewsAgent1
        )
    }
}

/// What the contract says a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A 2xx answer.
    Allowed,
    /// This status and problem type.
    Denied(u16, &'static str),
}

const UNAUTHENTICATED: Expect = Expect::Denied(401, "unauthenticated");
const FORBIDDEN: Expect = Expect::Denied(403, "forbidden");
const NOT_WHILE_IMPERSONATING: Expect = Expect::Denied(403, "impersonation_forbidden");
const NOT_FOUND: Expect = Expect::Denied(404, "not_found");
const CONFLICT: Expect = Expect::Denied(409, "conflict");
const READ_ONLY: Expect = Expect::Denied(403, "impersonation_read_only");

/// A view-only session gets what the same session in edit mode gets, except that
/// every write is refused as read only (or as reserved to the real human, first):
/// reads, signing out and "Return to Admin" are not writes of the agent's account.
fn view_only(ep: &Endpoint, edit: Expect) -> Expect {
    let session = ["/api/logout", "/api/impersonation"].contains(&ep.path);
    if ep.method == Method::GET || session || edit == NOT_WHILE_IMPERSONATING {
        edit
    } else {
        READ_ONLY
    }
}

/// The ids of one site's things a request may name.
#[derive(Debug, Clone)]
struct Things {
    agent1: String,
    agent2: String,
    lead: String,
    task: String,
    template: String,
    session: String,
}

/// One endpoint: method, path (with `{lead}`, `{task}`, `{template}`, `{session}`,
/// `{agent1}`, `{agent2}`, and `{fresh_lead}` / `{fresh_template}` for one made just
/// for the call), body, whether it names a thing of a site, and the contract.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    names_a_thing: bool,
    expect: fn(Caller, bool) -> Expect,
}

fn endpoint(
    method: Method,
    path: &'static str,
    body: Option<Value>,
    expect: fn(Caller, bool) -> Expect,
) -> Endpoint {
    Endpoint {
        names_a_thing: [
            "{agent1}",
            "{agent2}",
            "{lead}",
            "{session}",
            "{template}",
            "{fresh_lead}",
            "{fresh_template}",
            "{fresh_task}",
        ]
        .iter()
        .any(|p| path.contains(p) || body.as_ref().is_some_and(|b| b.to_string().contains(p))),
        method,
        path,
        body,
        expect,
    }
}

/// Readers of the audit trail and the log: owner, admin, auditor, never while
/// logged in as someone else.
fn audit_readers(c: Caller, own: bool) -> Expect {
    if c.impersonating() {
        NOT_WHILE_IMPERSONATING
    } else if !matches!(c, Caller::Owner | Caller::Admin | Caller::Auditor) {
        FORBIDDEN
    } else if !own {
        NOT_FOUND
    } else {
        Expect::Allowed
    }
}

/// agent1's screen at a past moment: the audit's readers of agent1's site, and
/// agent1 themselves; never while logged in as someone.
fn past_readers(c: Caller, own: bool) -> Expect {
    if c.impersonating() {
        NOT_WHILE_IMPERSONATING
    } else if c == Caller::Agent1 && own {
        Expect::Allowed
    } else if matches!(c, Caller::Agent1 | Caller::Agent2) {
        FORBIDDEN
    } else if !own {
        NOT_FOUND
    } else {
        Expect::Allowed
    }
}

/// The Lead Manager on agent1's lead: agent1 (or someone logged in as agent1),
/// owners and admins; other agents do not know it exists; auditors read the audit
/// trail, not the Lead Manager.
fn lead_workers(c: Caller, own: bool) -> Expect {
    if c == Caller::Auditor {
        FORBIDDEN
    } else if !own || c == Caller::Agent2 {
        NOT_FOUND
    } else {
        Expect::Allowed
    }
}

/// The Lead Manager itself: everyone but auditors.
fn lead_manager_users(c: Caller, _: bool) -> Expect {
    if c == Caller::Auditor {
        FORBIDDEN
    } else {
        Expect::Allowed
    }
}

/// agent1's own template: only whoever acts as agent1 sees it.
fn template_owners(c: Caller, own: bool) -> Expect {
    if own && c.acts_as_agent1() {
        Expect::Allowed
    } else {
        NOT_FOUND
    }
}

/// Settings and templates of one's own: everyone but auditors, who change nothing
/// but their own password.
fn settings_changers(c: Caller, _: bool) -> Expect {
    if c == Caller::Auditor {
        FORBIDDEN
    } else {
        Expect::Allowed
    }
}

/// agent1's own template, changed: auditors are refused before it is looked for.
fn template_changers(c: Caller, own: bool) -> Expect {
    if c == Caller::Auditor {
        FORBIDDEN
    } else {
        template_owners(c, own)
    }
}

fn anyone(_: Caller, _: bool) -> Expect {
    Expect::Allowed
}

fn the_real_human(c: Caller, _: bool) -> Expect {
    if c.impersonating() {
        NOT_WHILE_IMPERSONATING
    } else {
        Expect::Allowed
    }
}

fn user_managers(c: Caller, own: bool) -> Expect {
    if c.impersonating() {
        NOT_WHILE_IMPERSONATING
    } else if !c.manager() {
        FORBIDDEN
    } else if !own {
        NOT_FOUND
    } else {
        Expect::Allowed
    }
}

fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    vec![
        endpoint(M::GET, "/api/me", None, anyone),
        endpoint(M::GET, "/api/me/impersonations", None, the_real_human),
        endpoint(M::GET, "/api/me/notifications", None, anyone),
        endpoint(
            M::POST,
            "/api/me/notifications/read",
            Some(json!({})),
            the_real_human,
        ),
        endpoint(
            M::POST,
            "/api/me/password",
            Some(json!({"current_password": PASSWORD, "new_password": PASSWORD})),
            the_real_human,
        ),
        endpoint(
            M::POST,
            "/api/impersonation",
            Some(json!({"user_id": "{agent1}", "reason": "checking the matrix"})),
            |c, own| {
                // A user of another site is a target refused like any other.
                if c.impersonating() {
                    CONFLICT
                } else if !c.manager() || !own {
                    FORBIDDEN
                } else {
                    Expect::Allowed
                }
            },
        ),
        endpoint(M::DELETE, "/api/impersonation", None, |c, _| {
            if c.impersonating() {
                Expect::Allowed
            } else {
                CONFLICT
            }
        }),
        endpoint(M::GET, "/api/users", None, |c, _| {
            if matches!(c, Caller::Owner | Caller::Admin | Caller::Auditor) {
                Expect::Allowed
            } else {
                FORBIDDEN
            }
        }),
        endpoint(
            M::POST,
            "/api/users",
            Some(
                json!({"name": "Matrix Made", "email": "{unique_email}", "role": "agent", "password": "a-long-password"}),
            ),
            |c, _| user_managers(c, true),
        ),
        endpoint(
            M::PATCH,
            "/api/users/{agent2}",
            Some(json!({"active": true})),
            user_managers,
        ),
        endpoint(M::GET, "/api/site/settings", None, |c, _| {
            if c.manager() {
                Expect::Allowed
            } else {
                FORBIDDEN
            }
        }),
        endpoint(
            M::PATCH,
            "/api/site/settings",
            Some(json!({"notify_subject_on_impersonation": false})),
            |c, _| {
                if c.impersonating() {
                    NOT_WHILE_IMPERSONATING
                } else if c == Caller::Owner {
                    Expect::Allowed
                } else {
                    FORBIDDEN
                }
            },
        ),
        endpoint(M::GET, "/api/leads", None, lead_manager_users),
        endpoint(
            M::POST,
            "/api/leads",
            Some(json!({"name": "Matrix Lead"})),
            lead_manager_users,
        ),
        endpoint(M::GET, "/api/leads/{lead}", None, lead_workers),
        endpoint(
            M::PATCH,
            "/api/leads/{lead}",
            Some(json!({"phone": "+1 555 0100"})),
            lead_workers,
        ),
        endpoint(
            M::POST,
            "/api/leads/{lead}/assign",
            Some(json!({"agent_id": "{home_agent1}"})),
            |c, own| {
                if !c.manager() {
                    FORBIDDEN
                } else if !own {
                    NOT_FOUND
                } else {
                    Expect::Allowed
                }
            },
        ),
        endpoint(
            M::POST,
            "/api/leads/{lead}/notes",
            Some(json!({"body": "a note"})),
            lead_workers,
        ),
        endpoint(
            M::POST,
            "/api/leads/{lead}/tasks",
            Some(json!({"title": "Call back", "due_at": "2027-01-01T10:00:00Z"})),
            lead_workers,
        ),
        endpoint(
            M::POST,
            "/api/leads/{lead}/tasks/{fresh_task}/complete",
            None,
            lead_workers,
        ),
        endpoint(
            M::POST,
            "/api/leads/{lead}/communications",
            Some(json!({"channel": "call", "direction": "outbound", "summary": "voicemail"})),
            lead_workers,
        ),
        endpoint(M::DELETE, "/api/leads/{fresh_lead}", None, lead_workers),
        endpoint(M::GET, "/api/settings", None, anyone),
        endpoint(
            M::PATCH,
            "/api/settings",
            Some(json!({"timezone": "Europe/Paris"})),
            settings_changers,
        ),
        endpoint(M::GET, "/api/templates", None, anyone),
        endpoint(
            M::POST,
            "/api/templates",
            Some(json!({"kind": "text", "name": "Hello", "body": "Hi there"})),
            settings_changers,
        ),
        endpoint(
            M::PATCH,
            "/api/templates/{template}",
            Some(json!({"body": "Hi again"})),
            template_changers,
        ),
        endpoint(
            M::DELETE,
            "/api/templates/{fresh_template}",
            None,
            template_changers,
        ),
        endpoint(M::GET, "/api/audit/impersonations", None, |c, _| {
            audit_readers(c, true)
        }),
        endpoint(
            M::GET,
            "/api/audit/impersonations/{session}",
            None,
            // Also the agent it was about: who logged in as me, and what changed.
            |c, own| match c {
                Caller::Agent1 if own => Expect::Allowed,
                Caller::Agent1 | Caller::Agent2 => NOT_FOUND,
                _ => audit_readers(c, own),
            },
        ),
        endpoint(M::GET, "/api/audit/changes", None, |c, _| {
            audit_readers(c, true)
        }),
        endpoint(M::GET, "/api/audit/export?format=csv", None, |c, _| {
            audit_readers(c, true)
        }),
        endpoint(M::GET, "/api/audit/verify", None, |c, _| {
            audit_readers(c, true)
        }),
        endpoint(
            M::GET,
            "/api/audit/view/leads?subject_id={agent1}&at=2999-01-01T00%3A00%3A00Z",
            None,
            past_readers,
        ),
        endpoint(
            M::GET,
            "/api/audit/view/leads/{lead}?subject_id={agent1}",
            None,
            past_readers,
        ),
        endpoint(
            M::GET,
            "/api/audit/view/settings?subject_id={agent1}",
            None,
            past_readers,
        ),
        endpoint(
            M::GET,
            "/api/audit/view/leads/{lead}",
            None,
            // One's own past: agent1's lead as the caller could open it.
            |c, own| {
                if c.impersonating() {
                    NOT_WHILE_IMPERSONATING
                } else if own && matches!(c, Caller::Owner | Caller::Admin | Caller::Agent1) {
                    Expect::Allowed
                } else {
                    NOT_FOUND
                }
            },
        ),
        endpoint(M::GET, "/api/events", None, |c, _| audit_readers(c, true)),
        endpoint(M::GET, "/api/events/stream", None, |c, _| {
            audit_readers(c, true)
        }),
        endpoint(M::POST, "/api/logout", None, anyone),
    ]
}
