//! The benchmark's history: sites with their people, and leads that live a
//! realistic life (created, worked, handed over, changed while an admin is logged in
//! as the agent), appended in bulk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use crm_events::catalog::impersonation::{ImpersonationEnded, ImpersonationStarted};
use crm_events::catalog::lead::*;
use crm_events::catalog::values::{Channel, Direction, EndReason, ImpersonationMode, Stage};
use crm_events::ids::{
    CommunicationId, CorrelationId, ImpersonationId, LeadId, NoteId, SiteId, TaskId, UserId,
};
use crm_events::{
    DomainEvent, EventStore, ExpectedVersion, FieldChange, Metadata, StreamAppend, StreamKey,
    StreamType,
};
use indicatif::{ProgressBar, ProgressStyle};

use crm::app::{App, AppError, Clock, RequestContext};
use crm::domain::values::{Email, Password, PersonName, SiteName};

const AGENTS_PER_SITE: usize = 10;
const PASSWORD: &str = "bench-password";

/// One site of the benchmark: its agents' and admins' contexts.
pub(super) struct BenchSite {
    pub(super) id: SiteId,
    pub(super) admins: Vec<RequestContext>,
    pub(super) agents: Vec<(RequestContext, String)>,
}

pub(super) fn invalid(field: &'static str) -> impl Fn(String) -> AppError {
    move |why| AppError::invalid(field, why)
}

/// One site per 50,000 events (at least one), each with an owner, two admins, ten
/// agents and an auditor who can sign in.
pub(super) async fn create_sites(
    store: &EventStore,
    events: u64,
) -> Result<Vec<BenchSite>, AppError> {
    let app = App::start(store.clone(), Clock::system()).await?;
    let count = (events / 50_000).max(1);
    let mut sites = Vec::new();
    for s in 0..count {
        let domain = format!("site{s}.bench.example");
        let created = app
            .create_site(
                SiteName::parse(&format!("Bench Realty {s}")).map_err(invalid("name"))?,
                PersonName::parse("Owner").map_err(invalid("name"))?,
                Email::parse(&format!("owner@{domain}")).map_err(invalid("email"))?,
                Password::parse(PASSWORD).map_err(invalid("password"))?,
            )
            .await?;
        let operator = app.operator(created.site_id);
        let mut people = vec![
            ("admin1", crm_events::catalog::values::Role::Admin),
            ("admin2", crm_events::catalog::values::Role::Admin),
        ];
        people.extend(
            (1..=AGENTS_PER_SITE).map(|_| ("agent", crm_events::catalog::values::Role::Agent)),
        );
        let mut site = BenchSite {
            id: created.site_id,
            admins: Vec::new(),
            agents: Vec::new(),
        };
        for (i, (who, role)) in people.into_iter().enumerate() {
            let email = format!("{who}{i}@{domain}");
            app.create_user(
                &operator,
                PersonName::parse(&format!("{who} {i}")).map_err(invalid("name"))?,
                Email::parse(&email).map_err(invalid("email"))?,
                role,
                Password::parse(PASSWORD).map_err(invalid("password"))?,
            )
            .await?;
            let (token, ctx) = app
                .login(&email, PASSWORD, CorrelationId::generate())
                .await?;
            if role == crm_events::catalog::values::Role::Admin {
                site.admins.push(ctx);
            } else {
                site.agents.push((ctx, token));
            }
        }
        sites.push(site);
    }
    Ok(sites)
}

/// Appends about `events` events: leads with edits, stage changes, tags, notes, tasks
/// and communications, a fifth of them worked by an admin logged in as the agent.
/// The projections are folded afterwards by the (measured) rebuild.
pub(super) async fn fill(
    store: &EventStore,
    sites: &[BenchSite],
    events: u64,
) -> Result<(), AppError> {
    let bar = ProgressBar::new(events);
    bar.set_style(
        ProgressStyle::with_template("filling [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let appended = Arc::new(AtomicU64::new(store.head().await?.0 as u64));
    let workers = 32;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let store = store.clone();
        let appended = appended.clone();
        let bar = bar.clone();
        let plan: Vec<(SiteId, UserId, Vec<UserId>)> = sites
            .iter()
            .map(|s| {
                (
                    s.id,
                    s.agents[worker % s.agents.len()].0.actor(),
                    s.admins.iter().map(|a| a.actor()).collect(),
                )
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut k: u64 = worker as u64;
            while appended.load(Ordering::Relaxed) < events {
                let (site, agent, admins) = &plan[(k as usize) % plan.len()];
                let admin = admins[(k as usize) % admins.len()];
                let n = lead_history(&store, *site, *agent, admin, k).await?;
                bar.set_position(appended.fetch_add(n, Ordering::Relaxed) + n);
                k += workers as u64;
            }
            Ok::<_, AppError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| AppError::Conflict(format!("a fill task failed: {e}")))??;
    }
    bar.finish_and_clear();
    Ok(())
}

/// One lead's history; returns how many events it appended.
async fn lead_history(
    store: &EventStore,
    site: SiteId,
    agent: UserId,
    admin: UserId,
    k: u64,
) -> Result<u64, AppError> {
    let lead = LeadId::generate();
    let stream = StreamKey::new(StreamType::Lead, lead.as_uuid());
    let stages = Stage::ALL;
    let mut events: Vec<DomainEvent> = vec![LeadCreated {
        name: format!("Lead {k}"),
        email: Some(format!("lead{k}@example.com")),
        phone: Some(format!("+1 555 {:04}", k % 10_000)),
        source: Some("zillow".into()),
        stage: Stage::New,
        tags: vec!["buyer".into()],
        assigned_agent_id: Some(agent),
    }
    .into()];
    let mut stage = Stage::New;
    for step in 0..(4 + k % 8) {
        events.push(match step % 6 {
            0 => {
                let to = stages[((k + step) % stages.len() as u64) as usize];
                let changed = LeadStageChanged { from: stage, to };
                stage = to;
                if changed.from == changed.to {
                    LeadTagAdded {
                        tag: format!("t{step}"),
                    }
                    .into()
                } else {
                    changed.into()
                }
            }
            1 => LeadNoteAdded {
                note_id: NoteId::generate(),
                body: "Called, left a voicemail about the listing.".into(),
            }
            .into(),
            2 => LeadTaskCreated {
                task_id: TaskId::generate(),
                title: "Follow up".into(),
                due_at: Utc::now() + chrono::Duration::days((k % 30) as i64),
            }
            .into(),
            3 => LeadCommunicationLogged {
                communication_id: CommunicationId::generate(),
                channel: Channel::Call,
                direction: Direction::Outbound,
                summary: "Talked about financing".into(),
            }
            .into(),
            4 => LeadFieldsUpdated {
                changes: vec![FieldChange::new(
                    "phone",
                    format!("+1 555 {:04}", k % 10_000),
                    format!("+1 555 {:04}", (k + step) % 10_000),
                )],
            }
            .into(),
            _ => LeadTagAdded {
                tag: format!("tag{step}"),
            }
            .into(),
        });
    }
    let append = |events: &[DomainEvent], stream, expected| StreamAppend {
        site_id: site,
        stream,
        expected,
        events: events.iter().map(DomainEvent::to_new_event).collect(),
    };
    let mut count = events.len() as u64;
    if k % 5 == 0 {
        // An admin logs in as the agent and does the follow-ups.
        let session = ImpersonationId::generate();
        let session_stream = StreamKey::new(StreamType::Impersonation, session.as_uuid());
        let as_admin = Metadata {
            actor_id: admin,
            subject_id: agent,
            impersonation_id: Some(session),
            ..Metadata::acting_as_self(admin)
        };
        let start: DomainEvent = ImpersonationStarted {
            admin_id: admin,
            subject_id: agent,
            reason: Some("Clean up the pipeline".into()),
            expires_at: Utc::now() + chrono::Duration::minutes(60),
            mode: ImpersonationMode::Edit,
        }
        .into();
        store
            .append(
                append(&events[..1], stream, ExpectedVersion::NoStream),
                Metadata::acting_as_self(agent),
            )
            .await?;
        store
            .append(
                append(&[start], session_stream, ExpectedVersion::NoStream),
                as_admin.clone(),
            )
            .await?;
        store
            .append(
                append(&events[1..], stream, ExpectedVersion::Exact(1)),
                as_admin.clone(),
            )
            .await?;
        let end: DomainEvent = ImpersonationEnded {
            end_reason: EndReason::Returned,
            ended_at: Utc::now(),
        }
        .into();
        store
            .append(
                append(&[end], session_stream, ExpectedVersion::Exact(1)),
                as_admin,
            )
            .await?;
        count += 2;
    } else {
        store
            .append(
                append(&events, stream, ExpectedVersion::NoStream),
                Metadata::acting_as_self(agent),
            )
            .await?;
    }
    Ok(count)
}
