//! Many clients editing the same leads at once over real HTTP, on both backends:
//! with `If-Match`, every accepted write is in the log (each at its own version),
//! every rejected one got 409 and appended nothing, no update is lost, and the
//! projections equal a fold of the log (and a rebuild of it).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crm_events::backend_tests;
use crm_events::catalog::lead::LeadFieldsUpdated;
use crm_events::testing::TestDatabase;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(concurrent_if_match_edits_lose_no_update,);

const CLIENTS: usize = 32;
const WRITES_PER_CLIENT: usize = 12;
const LEADS: usize = 4;

/// One HTTP/1.1 exchange on a connection of its own: status, `ETag`, JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    if_match: Option<&str>,
    body: Option<&Value>,
) -> (u16, Option<String>, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let if_match = if_match
        .map(|v| format!("If-Match: {v}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{if_match}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let etag = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("etag: ")
            .map(str::to_owned)
    });
    (
        status,
        etag,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// What one client saw of one write.
#[derive(Debug)]
struct Outcome {
    lead: String,
    source: String,
    /// The version the write was based on (its `If-Match`).
    based_on: u64,
    /// Accepted: the position and version answered; rejected: none.
    accepted: Option<(i64, u64)>,
}

async fn concurrent_if_match_edits_lose_no_update(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = crm::http::router(crm::http::AppState { app: app.clone() });
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // The same few leads of agent1, edited by agent1's sessions, the owner and the
    // admins, and admins logged in as agent1.
    let mut leads = Vec::new();
    for i in 0..LEADS {
        let (status, _, lead) = http(
            addr,
            "POST",
            "/api/leads",
            &s.agent1.token,
            None,
            Some(&json!({"name": format!("Shared {i}")})),
        )
        .await;
        assert_eq!(status, 201, "{lead}");
        leads.push(lead["id"].as_str().unwrap().to_owned());
    }
    let mut tokens = Vec::new();
    for c in 0..CLIENTS {
        let token = match c % 4 {
            0 => api_login(&app, &s.agent1.email).await,
            1 => api_login(&app, &s.owner.email).await,
            2 => {
                api_login(
                    &app,
                    if c % 8 == 2 {
                        &s.admin.email
                    } else {
                        &s.admin2.email
                    },
                )
                .await
            }
            _ => {
                let admin = api_login(&app, &s.admin.email).await;
                let (status, _, me) = http(
                    addr,
                    "POST",
                    "/api/impersonation",
                    &admin,
                    None,
                    Some(&json!({"user_id": s.agent1.id, "reason": "helping out"})),
                )
                .await;
                assert_eq!(status, 200, "{me}");
                admin
            }
        };
        tokens.push(token);
    }
    let before = head(&app).await;

    let clients = tokens.into_iter().enumerate().map(|(c, token)| {
        let leads = leads.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for w in 0..WRITES_PER_CLIENT {
                let lead = &leads[(c + w) % LEADS];
                let path = format!("/api/leads/{lead}");
                let (status, etag, read) = http(addr, "GET", &path, &token, None, None).await;
                assert_eq!(status, 200, "{read}");
                let etag = etag.expect("a lead has an ETag");
                let source = format!("client {c} write {w}");
                let (status, _, written) = http(
                    addr,
                    "PATCH",
                    &path,
                    &token,
                    Some(&etag),
                    Some(&json!({"source": source})),
                )
                .await;
                let accepted = match status {
                    200 => Some((
                        written["position"].as_i64().unwrap(),
                        written["version"].as_u64().unwrap(),
                    )),
                    409 => {
                        assert_eq!(written["type"], "conflict", "{written}");
                        None
                    }
                    other => panic!("a write answered {other}: {written}"),
                };
                let based_on = etag.trim_matches('"').parse().unwrap();
                outcomes.push(Outcome {
                    lead: lead.clone(),
                    source,
                    based_on,
                    accepted,
                });
            }
            outcomes
        })
    });
    let mut outcomes = Vec::new();
    for client in futures_util::future::join_all(clients).await {
        outcomes.extend(client.unwrap());
    }
    let accepted = outcomes.iter().filter(|o| o.accepted.is_some()).count();
    let rejected = outcomes.len() - accepted;
    eprintln!("{accepted} writes accepted, {rejected} rejected with 409");
    assert!(
        accepted >= LEADS && rejected > 0,
        "a real race: {accepted} accepted, {rejected} rejected"
    );

    // The log after the race: exactly the accepted writes, each where it was said to be.
    // The reads of the clients logged in as agent1 were recorded as views.
    let (views, events): (Vec<_>, Vec<_>) = events_after(&app, before)
        .await
        .into_iter()
        .partition(|e| e.event_type == "LeadViewed");
    assert!(
        !views.is_empty(),
        "the reads made while logged in as agent1"
    );
    let mut in_log: HashMap<String, (i64, u64, Value, Value)> = HashMap::new();
    for event in &events {
        assert_eq!(
            event.event_type, "LeadFieldsUpdated",
            "only the edits were appended"
        );
        let payload: LeadFieldsUpdated = serde_json::from_str(&event.payload).unwrap();
        let change = &payload.changes[0];
        assert_eq!(
            (payload.changes.len(), change.field.as_str()),
            (1, "source")
        );
        let source = change.after.as_str().unwrap().to_owned();
        let entry = (
            event.position.0,
            event.stream_version,
            change.before.clone(),
            change.after.clone(),
        );
        assert!(
            in_log.insert(source, entry).is_none(),
            "each write at most once"
        );
    }
    assert_eq!(
        in_log.len(),
        accepted,
        "every accepted write is in the log, and nothing else"
    );
    for outcome in &outcomes {
        match (outcome.accepted, in_log.get(&outcome.source)) {
            (Some((position, version)), Some(logged)) => {
                assert_eq!(position, logged.0, "{outcome:?}");
                // Accepted only on top of the version it was based on.
                assert_eq!(logged.1, outcome.based_on + 1, "{outcome:?}");
                // The lead answered is as new as the write at least (another
                // client's write may have come after it).
                assert!(version >= logged.1, "{outcome:?}: logged {logged:?}");
            }
            (None, None) => {}
            (answered, logged) => panic!("{outcome:?}: answered {answered:?}, logged {logged:?}"),
        }
    }

    // Per lead, the accepted writes follow one another: versions 2, 3, ... and each
    // one's "before" is the previous one's "after" (nothing was overwritten unseen).
    let mut chains: BTreeMap<&str, Vec<(u64, Value, Value)>> = BTreeMap::new();
    for outcome in outcomes.iter().filter(|o| o.accepted.is_some()) {
        let logged = &in_log[&outcome.source];
        chains.entry(&outcome.lead).or_default().push((
            logged.1,
            logged.2.clone(),
            logged.3.clone(),
        ));
    }
    let mut last_source = HashMap::new();
    for (lead, mut chain) in chains {
        chain.sort_by_key(|c| c.0);
        let mut previous = Value::Null;
        for (i, (version, before, after)) in chain.iter().enumerate() {
            assert_eq!(
                *version,
                2 + i as u64,
                "lead {lead}: versions without a gap"
            );
            assert_eq!(*before, previous, "lead {lead} at version {version}");
            previous = after.clone();
        }
        last_source.insert(lead.to_owned(), (previous, 1 + chain.len() as u64));
    }

    // The projections equal that fold of the log, before and after a rebuild, and the
    // audit trail holds every accepted change.
    let read_leads = |token: String| {
        let leads = leads.clone();
        async move {
            let mut read = Vec::new();
            for lead in &leads {
                let (status, etag, body) = http(
                    addr,
                    "GET",
                    &format!("/api/leads/{lead}"),
                    &token,
                    None,
                    None,
                )
                .await;
                assert_eq!(status, 200);
                read.push((etag, body["source"].clone(), body["version"].as_u64()));
            }
            read
        }
    };
    let projected = read_leads(s.agent1.token.clone()).await;
    for (lead, (etag, source, version)) in leads.iter().zip(&projected) {
        let (last, expected_version) = last_source.get(lead).cloned().unwrap_or((Value::Null, 1));
        assert_eq!(
            (source, *version),
            (&last, Some(expected_version)),
            "lead {lead}"
        );
        assert_eq!(
            etag.as_deref(),
            Some(format!("\"{expected_version}\"").as_str())
        );
    }
    let (status, _, changes) = http(
        addr,
        "GET",
        "/api/audit/changes?entity_type=lead&limit=500",
        &s.owner.token,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let audited = changes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["field"] == "source")
        .count();
    assert_eq!(
        audited, accepted,
        "every accepted change is in the audit trail"
    );
    let names = app.projector().names();
    app.projector().rebuild(&names, &|_| {}).await.unwrap();
    assert_eq!(
        read_leads(s.agent1.token.clone()).await,
        projected,
        "a rebuild gives the same leads"
    );
    server.abort();
}

/// A fresh session's token.
async fn api_login(app: &crm::app::App, email: &str) -> String {
    login(app, email).await.token
}
