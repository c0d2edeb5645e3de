//! Erasing a lead's personal data (a right to be forgotten), on both backends:
//! who may, what reads and writes answer afterwards, what the audit trail keeps,
//! that a rebuild gives the same, that the log still verifies, and that none of
//! the lead's values is left in the database's bytes while another lead's are.

mod support;

use chrono::{Duration, Utc};
use crm::app::reads::LeadQuery;
use crm::app::AppError;
use crm::domain::lead::LeadEdit;
use crm::domain::values::{DueAt, Email, NoteBody, PersonName, Phone, Reason, Summary, TaskTitle};
use crm_events::backend_tests;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::catalog::values::{Channel, Direction, Stage};
use crm_events::ids::LeadId;
use crm_events::testing::TestDatabase;
use crm_events::vault::ERASED;
use crm_events::{DomainEvent, Position};
use crm_projections::audit_trail::{Change, ChangeFilter};
use serde_json::{json, Value};
use support::*;
use uuid::Uuid;

backend_tests!(
    an_erased_lead_is_unreadable_everywhere_and_its_bytes_are_gone_while_the_log_verifies,
    only_owners_and_admins_erase_never_while_logged_in_as_someone,
    over_http_an_erasure_answers_once_refuses_writes_as_gone_and_drops_kept_answers,
    the_command_line_erases_and_refuses_a_wrong_or_missing_master_key,
    two_servers_erasing_at_once_record_one_erasure_and_a_kept_copy_writes_nothing,
);

/// A lead's values that no other row shares.
struct Distinct {
    name: String,
    email: String,
    phone: String,
    note: String,
    task: String,
    call: String,
    renamed: String,
    new_email: String,
    admin_note: String,
}

impl Distinct {
    fn new() -> Self {
        let tag = Uuid::now_v7().simple().to_string();
        let tag = &tag[tag.len() - 10..];
        let digits: String = tag
            .bytes()
            .map(|b| char::from(b'0' + b % 10))
            .take(7)
            .collect();
        Self {
            name: format!("Quillon Zevarro{tag}"),
            email: format!("qz{tag}@erasure.example"),
            phone: format!("+1 {}", &digits),
            note: format!("Wants the lighthouse{tag} cottage"),
            task: format!("Send the mortgage{tag} papers"),
            call: format!("Talked about financing{tag}"),
            renamed: format!("Quillon Zevarro-Ames{tag}"),
            new_email: format!("qza{tag}@erasure.example"),
            admin_note: format!("Admin fixed the address{tag}"),
        }
    }

    fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.name.clone(),
            self.email.clone(),
            self.phone.clone(),
            self.note.clone(),
            self.task.clone(),
            self.call.clone(),
            self.renamed.clone(),
            self.new_email.clone(),
            self.admin_note.clone(),
        ];
        // The Lead Manager sorts and searches by the name in lower case.
        all.push(self.name.to_lowercase());
        all.push(self.renamed.to_lowercase());
        all
    }
}

/// A lead of `s.agent1` with every kind of personal value, then changed by an
/// admin logged in as the agent.
async fn worked_lead(app: &crm::app::App, s: &Site, v: &Distinct) -> LeadId {
    let agent = &s.agent1.ctx;
    let mut new = new_lead(&v.name);
    new.email = Some(Email::parse(&v.email).unwrap());
    new.phone = Some(Phone::parse(&v.phone).unwrap());
    let (lead, _) = app.create_lead(agent, new).await.unwrap();
    app.add_note(agent, lead, NoteBody::parse(&v.note).unwrap())
        .await
        .unwrap();
    app.create_task(
        agent,
        lead,
        TaskTitle::parse(&v.task).unwrap(),
        DueAt::parse(&(Utc::now() + Duration::days(3)).to_rfc3339()).unwrap(),
    )
    .await
    .unwrap();
    app.log_communication(
        agent,
        lead,
        Channel::Call,
        Direction::Inbound,
        Summary::parse(&v.call).unwrap(),
    )
    .await
    .unwrap();
    let (acting, _) = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Fix the lead's contact"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    app.edit_lead(
        &acting,
        lead,
        LeadEdit {
            name: Some(PersonName::parse(&v.renamed).unwrap()),
            email: Some(Some(Email::parse(&v.new_email).unwrap())),
            stage: Some(Stage::Contacted),
            ..LeadEdit::default()
        },
        None,
    )
    .await
    .unwrap();
    app.add_note(&acting, lead, NoteBody::parse(&v.admin_note).unwrap())
        .await
        .unwrap();
    app.return_to_admin(&acting).await.unwrap();
    lead
}

async fn changes_of(app: &crm::app::App, s: &Site, lead: LeadId) -> Vec<Change> {
    let filter = ChangeFilter {
        entity_id: Some(lead.as_uuid()),
        ..ChangeFilter::default()
    };
    app.audit_changes(&s.owner.ctx, &filter, None, 500)
        .await
        .unwrap()
        .items
}

/// The database's bytes, as files on disk (SQLite, with its write-ahead log) or
/// as `pg_dump` writes them (PostgreSQL).
fn database_bytes(db: &TestDatabase) -> Vec<u8> {
    if db.backend() == "sqlite" {
        let path = db.url.trim_start_matches("sqlite://");
        let mut bytes = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(file) = std::fs::read(format!("{path}{suffix}")) {
                bytes.extend(file);
            }
        }
        bytes
    } else {
        let out = std::process::Command::new("pg_dump")
            .arg(&db.url)
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// PostgreSQL: the bytes of every table and index file of the test database,
/// after a checkpoint (what a copy of the server's data directory would hold).
/// `None` when this process may not read the server's files (a server on
/// another machine); under CI the server is local and this is a failure.
async fn postgres_files(db: &TestDatabase) -> Option<Vec<u8>> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&mut conn).await.unwrap();
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let files: Vec<String> = sqlx::query_scalar(
        "SELECT pg_relation_filepath(oid) FROM pg_class \
         WHERE pg_relation_filepath(oid) IS NOT NULL AND relkind IN ('r', 'i', 't')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut bytes = Vec::new();
    for file in files {
        let path = std::path::Path::new(&dir).join(&file);
        match std::fs::read(&path) {
            Ok(content) => bytes.extend(content),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                assert!(!ci, "cannot read PostgreSQL's {}: {error}", path.display());
                eprintln!("PostgreSQL's files not read ({error}): only pg_dump was searched");
                return None;
            }
        }
        // Segments past the first gigabyte.
        for n in 1.. {
            match std::fs::read(format!("{}.{n}", path.display())) {
                Ok(content) => bytes.extend(content),
                Err(_) => break,
            }
        }
    }
    Some(bytes)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

async fn an_erased_lead_is_unreadable_everywhere_and_its_bytes_are_gone_while_the_log_verifies(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Erasure Realty", "erasure.example").await;
    let gone = Distinct::new();
    let kept = Distinct::new();
    let lead = worked_lead(&app, &s, &gone).await;
    let other = worked_lead(&app, &s, &kept).await;
    let before = changes_of(&app, &s, lead).await;
    assert!(
        before.iter().any(|c| c.after == json!(gone.renamed)),
        "before erasure the audit shows the values"
    );

    let head = head(&app).await;
    let erased = app
        .erase_lead(
            &s.admin.ctx,
            lead,
            Reason::parse("GDPR Art. 17 request #4411").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(erased.id, lead);
    assert_eq!(
        erased.position,
        Position(head.0 + 1),
        "one event: LeadErased"
    );

    // Erasing again appends nothing and answers the first erasure.
    let again = app
        .erase_lead(&s.owner.ctx, lead, Reason::parse("again").unwrap())
        .await
        .unwrap();
    assert_eq!(again, erased);
    assert_eq!(support::head(&app).await, erased.position);

    // The lead reads with its personal fields null and `erased`.
    let detail = app.lead_detail(&s.agent1.ctx, lead).await.unwrap();
    assert!(detail.lead.erased);
    assert_eq!(
        (&detail.lead.name, &detail.lead.email, &detail.lead.phone),
        (&None, &None, &None)
    );
    assert_eq!(detail.lead.stage, "contacted", "what is not personal stays");
    assert_eq!(detail.notes.len(), 2);
    assert!(detail
        .notes
        .iter()
        .all(|n| n.body.is_none() && n.author_name.is_some()));
    assert!(detail.tasks.iter().all(|t| t.title.is_none()));
    assert!(detail
        .communications
        .iter()
        .all(|c| c.summary.is_none() && c.channel == "call"));

    // Writes are refused as gone; nothing is appended.
    let refused = app
        .add_note(&s.agent1.ctx, lead, NoteBody::parse("more").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(refused, AppError::Gone("lead")), "{refused:?}");
    let refused = app
        .edit_lead(
            &s.admin.ctx,
            lead,
            LeadEdit {
                stage: Some(Stage::Nurture),
                ..LeadEdit::default()
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, AppError::Gone("lead")), "{refused:?}");
    assert_eq!(support::head(&app).await, erased.position);

    // Search no longer finds it; the other lead is found.
    for (q, found) in [(&gone.renamed, 0), (&kept.renamed, 1)] {
        let page = app
            .leads(
                &s.agent1.ctx,
                LeadQuery {
                    q: Some(q.clone()),
                    ..LeadQuery::default()
                },
                None,
                50,
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), found, "q={q}");
    }

    // The audit keeps who changed which field when, with the values erased.
    let after = changes_of(&app, &s, lead).await;
    assert_eq!(
        after.len(),
        before.len() + 2,
        "the erasure and its reason are changes too"
    );
    for (was, now) in before.iter().zip(after.iter().skip(2)) {
        assert_eq!(
            (
                was.position,
                &was.field,
                was.actor_id,
                was.subject_id,
                was.impersonation_id,
                was.at
            ),
            (
                now.position,
                &now.field,
                now.actor_id,
                now.subject_id,
                now.impersonation_id,
                now.at
            )
        );
    }
    let text = serde_json::to_string(&after).unwrap();
    for value in gone.all() {
        assert!(!text.contains(&value), "the audit still shows {value}");
    }
    let renamed = after
        .iter()
        .find(|c| c.field == "name" && c.impersonation_id.is_some())
        .unwrap();
    assert_eq!(
        (
            renamed.before.clone(),
            renamed.after.clone(),
            renamed.actor_id,
            renamed.subject_id
        ),
        (
            json!(ERASED),
            json!(ERASED),
            s.admin.id.as_uuid(),
            s.agent1.id.as_uuid()
        )
    );
    assert_eq!(renamed.entity_label.as_deref(), Some(ERASED));
    let erasure: Vec<(&str, &Value, Uuid)> = after
        .iter()
        .filter(|c| c.event_type == "LeadErased")
        .map(|c| (c.field.as_str(), &c.after, c.actor_id))
        .collect();
    let reason = json!("GDPR Art. 17 request #4411");
    assert_eq!(
        erasure,
        [
            ("reason", &reason, s.admin.id.as_uuid()),
            ("erased", &json!(true), s.admin.id.as_uuid())
        ],
        "newest first: the reason is the erasure's second change"
    );
    // The other lead's audit is untouched.
    let other_text = serde_json::to_string(&changes_of(&app, &s, other).await).unwrap();
    assert!(other_text.contains(&kept.renamed) && other_text.contains(&kept.new_email));

    // The events read with the values erased, the other lead's opened.
    let events = app.store().read_all(Position::START, 10_000).await.unwrap();
    let created = |id: LeadId| {
        events
            .iter()
            .filter(|e| e.stream.id == id.as_uuid())
            .find_map(|e| match DomainEvent::decode(e).unwrap() {
                DomainEvent::LeadCreated(c) => Some(c),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(created(lead).name, ERASED);
    assert_eq!(created(lead).email.as_deref(), Some(ERASED));
    assert_eq!(created(other).name, kept.name);
    // The chain covers the sealed text, which never changed.
    assert!(app.store().verify(None).await.unwrap().ok);

    // A rebuild gives the same projections.
    let lead_before = app.lead_detail(&s.agent1.ctx, lead).await.unwrap();
    let names: Vec<&'static str> = crm_projections::all().iter().map(|p| p.name()).collect();
    app.projector().rebuild(&names, &|_| {}).await.unwrap();
    assert_eq!(
        app.lead_detail(&s.agent1.ctx, lead).await.unwrap(),
        lead_before
    );
    assert_eq!(changes_of(&app, &s, lead).await, after);

    // None of the values is left in the database's bytes; the other lead's are
    // (the search can find what is there).
    app.scrub_erased().await.unwrap();
    let bytes = database_bytes(db);
    for value in gone.all() {
        assert!(
            !contains(&bytes, &value),
            "{value} is still in the database"
        );
    }
    assert!(contains(&bytes, &kept.renamed) && contains(&bytes, &kept.note));
    if db.backend() == "postgres" {
        if let Some(files) = postgres_files(db).await {
            for value in gone.all() {
                assert!(
                    !contains(&files, &value),
                    "{value} is still in PostgreSQL's files"
                );
            }
            assert!(contains(&files, &kept.renamed));
        }
    }
}

async fn only_owners_and_admins_erase_never_while_logged_in_as_someone(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Erasure Realty", "erasure.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Dana Novak").await;
    let why = || Reason::parse("asked to be forgotten").unwrap();
    let head = head(&app).await;
    for person in [&s.agent1, &s.auditor] {
        let refused = app.erase_lead(&person.ctx, lead, why()).await.unwrap_err();
        assert!(matches!(refused, AppError::Forbidden(_)), "{refused:?}");
    }
    let (acting, _) = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("look"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap();
    let refused = app.erase_lead(&acting, lead, why()).await.unwrap_err();
    assert!(
        matches!(refused, AppError::ImpersonationForbidden(_)),
        "{refused:?}"
    );
    app.return_to_admin(&acting).await.unwrap();
    let after_session = support::head(&app).await;
    assert_eq!(
        after_session.0,
        head.0 + 2,
        "only the session's start and end"
    );

    // Another site's admin does not see the lead at all.
    let other = site(&app, "Elsewhere", "elsewhere.example").await;
    let refused = app
        .erase_lead(&other.admin.ctx, lead, why())
        .await
        .unwrap_err();
    assert!(matches!(refused, AppError::NotFound("lead")), "{refused:?}");

    // An archived lead can still be erased.
    app.archive_lead(&s.agent1.ctx, lead, None).await.unwrap();
    app.erase_lead(&s.owner.ctx, lead, why()).await.unwrap();
    let value: Value = serde_json::to_value(
        app.store()
            .read_all(Position::START, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.stream.id == lead.as_uuid())
            .map(|e| e.event_type.clone())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(value, json!(["LeadCreated", "LeadArchived", "LeadErased"]));
}

/// A write of agent `token`'s with an `Idempotency-Key`.
async fn keyed(
    api: &support::http::Api,
    token: &str,
    method: axum::http::Method,
    path: &str,
    body: &Value,
    key: &str,
) -> support::http::Reply {
    api.call(
        method,
        path,
        Some(token),
        Some(body),
        &[("idempotency-key", key)],
    )
    .await
}

async fn over_http_an_erasure_answers_once_refuses_writes_as_gone_and_drops_kept_answers(
    db: &TestDatabase,
) {
    use axum::http::Method;
    let (api, s) = support::http::demo(db).await;
    let name = format!("Ysolde Brakk{}", Uuid::now_v7().simple());
    // Created and noted with Idempotency-Key: the answers kept for retries hold
    // the lead's name and the note.
    let created = api
        .call(
            Method::POST,
            "/api/leads",
            Some(&s.agent1.token),
            Some(&json!({"name": name, "email": "ysolde@erasure.example"})),
            &[("idempotency-key", "create-1")],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.id();
    let (notes, note_body) = (
        format!("/api/leads/{id}/notes"),
        json!({"body": format!("{name} wants a garden")}),
    );
    let agent = &s.agent1.token;
    let note = || keyed(&api, agent, Method::POST, &notes, &note_body, "note-1");
    assert_eq!(note().await.status, 201);
    // The same lead named with a percent-encoded id (the router decodes it).
    let (encoded, change) = (
        format!("/api/leads/%{:x}{}", id.as_bytes()[0], &id[1..]),
        json!({"phone": "+1 555 6060", "name": format!("{name} Jr")}),
    );
    let change_encoded = || keyed(&api, agent, Method::PATCH, &encoded, &change, "encoded-1");
    let changed = change_encoded().await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let kept = || async {
        let rows: Vec<(Vec<u8>,)> = crm_events::on_pool!(api.app.store().database(), |pool| {
            sqlx::query_as("SELECT body FROM http_idempotency")
                .fetch_all(pool)
                .await
                .unwrap()
        });
        rows.iter().filter(|(body,)| contains(body, &name)).count()
    };
    assert_eq!(kept().await, 3);
    let recorded = || async {
        let pattern = format!("%{id}%");
        let rows: Vec<(String,)> = crm_events::on_pool!(api.app.store().database(), |pool| {
            sqlx::query_as("SELECT key FROM idempotency_keys WHERE outcome LIKE $1")
                .bind(&pattern)
                .fetch_all(pool)
                .await
                .unwrap()
        });
        rows.len()
    };
    assert!(
        recorded().await >= 2,
        "the store's records of the retried appends"
    );

    // A reason is required; an agent may not.
    let path = format!("/api/leads/{id}/erase");
    api.post(&s.admin.token, &path, json!({"reason": "  "}))
        .await
        .problem(422, "validation");
    api.post(&s.admin.token, &path, json!({"reason": "x", "extra": 1}))
        .await
        .problem(422, "validation");
    api.post(&s.agent1.token, &path, json!({"reason": "asked"}))
        .await
        .problem(403, "forbidden");

    let erased = api
        .post(
            &s.admin.token,
            &path,
            json!({"reason": "asked to be forgotten"}),
        )
        .await;
    assert_eq!(erased.status, 200, "{:?}", erased.body);
    assert_eq!(erased.body["id"], json!(id));
    let position = erased.body["position"].as_i64().unwrap();
    assert_eq!(
        erased.header("x-position"),
        Some(position.to_string().as_str())
    );
    assert!(erased.body["erased_at"].is_string());
    let again = api
        .post(&s.owner.token, &path, json!({"reason": "again"}))
        .await;
    assert_eq!(
        again.body, erased.body,
        "erasing again answers the first erasure"
    );
    assert_eq!(kept().await, 0, "the kept answers about the lead are gone");
    assert_eq!(
        recorded().await,
        0,
        "so are the store's records of its appends"
    );
    // An answer about the lead that comes to be kept only now is not kept.
    let late = crm::app::responses::KeptResponse {
        fingerprint: [7; 32],
        status: 200,
        content_type: None,
        body: name.clone().into_bytes(),
    };
    let lead_id: Uuid = id.parse().unwrap();
    api.app
        .keep_response(&[9; 32], "late-1", &late, Some(lead_id))
        .await
        .unwrap();
    assert_eq!(kept().await, 0, "nothing is kept about an erased lead");
    change_encoded().await.problem(410, "gone");

    let lead = api.get(&s.agent1.token, &format!("/api/leads/{id}")).await;
    assert_eq!(lead.status, 200);
    assert_eq!(
        (
            &lead.body["name"],
            &lead.body["email"],
            &lead.body["erased"]
        ),
        (&Value::Null, &Value::Null, &json!(true))
    );
    assert_eq!(lead.body["notes"][0]["body"], Value::Null);
    assert!(lead.body["notes"][0]["created_at"].is_string());
    let gone = api
        .patch(
            &s.agent1.token,
            &format!("/api/leads/{id}"),
            json!({"stage": "closed"}),
            None,
        )
        .await;
    gone.problem(410, "gone");
    // A retry of the note with its key runs again, and is refused as gone.
    note().await.problem(410, "gone");
    let events = api
        .get(&s.owner.token, "/api/events?after=0&limit=10000")
        .await;
    assert!(!events.raw.windows(name.len()).any(|w| w == name.as_bytes()));
}

fn crm(db: &TestDatabase, key: Option<&std::path::Path>, args: &[&str]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crm"));
    command.env_remove("CRM_MASTER_KEY_FILE");
    if let Some(key) = key {
        command.env("CRM_MASTER_KEY_FILE", key);
    }
    let out = command
        .args(args)
        .args(["--database-url", &db.url])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn the_command_line_erases_and_refuses_a_wrong_or_missing_master_key(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Erasure Realty", "erasure.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Wenna Castellane").await;
    app.settle().await.unwrap();
    drop(app);
    let (site_id, lead_id) = (s.id.to_string(), lead.to_string());
    let erase = [
        "lead", "erase", "--site", &site_id, "--lead", &lead_id, "--reason", "asked",
    ];

    // Another master key, or none, is refused before anything is read or written.
    let dir = std::env::temp_dir().join(format!("crm-other-key-{}", Uuid::now_v7().simple()));
    let other = crm_events::vault::MasterKey::generate_file(&dir).unwrap();
    let (ok, said) = crm(db, Some(&other), &erase);
    assert!(!ok && said.contains("wrong master key"), "{said}");
    let (ok, said) = crm(db, None, &["serve", "--bind", "127.0.0.1:0"]);
    assert!(!ok && said.contains("--master-key-file"), "{said}");
    std::fs::write(dir.join("garbage"), "not a key").unwrap();
    let (ok, said) = crm(db, Some(&dir.join("garbage")), &erase);
    assert!(!ok && said.contains("not a master key"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);

    let (ok, said) = crm(db, Some(&db.master_key_file), &erase);
    assert!(ok, "{said}");
    let cleaned = if db.backend() == "sqlite" {
        "write-ahead log was emptied"
    } else {
        "rewrote (VACUUM FULL) lead_keys"
    };
    assert!(said.contains("erased") && said.contains(cleaned), "{said}");
    let app = support::app(db).await;
    let read = app.lead_row(&s.owner.ctx, lead).await.unwrap();
    assert!(read.erased && read.name.is_none());
    // The operator erased it: the audit says so.
    let changes = changes_of(&app, &s, lead).await;
    let erased = changes.iter().find(|c| c.field == "erased").unwrap();
    assert_eq!(erased.actor_id, crm_events::ids::UserId::SYSTEM.as_uuid());
    let (ok, said) = crm(db, Some(&db.master_key_file), &erase);
    assert!(ok, "erasing again is no error: {said}");
}

async fn two_servers_erasing_at_once_record_one_erasure_and_a_kept_copy_writes_nothing(
    db: &TestDatabase,
) {
    let one = app(db).await;
    let other = crm::app::App::start(db.store().await, crm::app::Clock::system())
        .await
        .unwrap();
    let s = site(&one, "Erasure Realty", "erasure.example").await;
    let lead = lead_of(&one, &s.agent1.ctx, "Orsolya Vance").await;
    // The other server works on the lead: it keeps the lead and its key.
    other
        .add_note(&s.agent1.ctx, lead, NoteBody::parse("first call").unwrap())
        .await
        .unwrap();
    let why = || Reason::parse("asked to be forgotten").unwrap();
    let (first, second) = tokio::join!(
        one.erase_lead(&s.owner.ctx, lead, why()),
        other.erase_lead(&s.admin.ctx, lead, why())
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second, "both answer the one erasure");
    let erasures = one
        .store()
        .read_all(Position::START, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "LeadErased")
        .count();
    assert_eq!(erasures, 1);
    // Each server refuses a write on what it kept, and appends nothing.
    let head = support::head(&one).await;
    for server in [&one, &other] {
        let refused = server
            .add_note(&s.agent1.ctx, lead, NoteBody::parse("again").unwrap())
            .await
            .unwrap_err();
        assert!(matches!(refused, AppError::Gone("lead")), "{refused:?}");
        let read = server.lead_row(&s.agent1.ctx, lead).await.unwrap();
        assert!(read.erased && read.name.is_none());
    }
    assert_eq!(support::head(&one).await, head);
}
