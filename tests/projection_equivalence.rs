//! A long random history, on both backends: the projections as folded while it
//! happened, the projections rebuilt from position 0, and an independent in-memory
//! fold of the same events all agree. A rebuild stopped half-way and run again agrees
//! too, and so does one forced by a projection's version changing.

mod support;

use crm_events::catalog::values::ImpersonationMode;
use std::collections::{BTreeMap, HashMap};

use crm::app::past::At;
use crm::app::reads::LeadQuery;
use crm::app::{App, AppError, RequestContext};
use crm::domain::lead::LeadEdit;
use crm::domain::settings::{SettingsChange, TemplateEdit};
use crm::domain::site::SiteSettingsEdit;
use crm::domain::values::{
    DueAt, Email, NoteBody, PersonName, Phone, Reason, Summary, Tags, TaskTitle, TemplateBody,
    TemplateName, TemplateSubject,
};
use crm_events::backend_tests;
use crm_events::catalog::values::{Channel, Direction, Stage, TemplateKind};
use crm_events::ids::{LeadId, TaskId, TemplateId, UserId};
use crm_events::testing::TestDatabase;
use crm_events::{DomainEvent, EventStore, Position};
use crm_projections::audit_trail::{self, ChangeFilter, SessionFilter};
use crm_projections::lead_manager::{self, LeadFilter, LeadSort, Owner};
use crm_projections::{notifications, settings, users, Projector};
use serde_json::{json, Value};
use support::*;

backend_tests!(
    incremental_rebuilt_and_independently_folded_projections_agree,
    two_servers_writing_by_turns_leave_the_projections_a_fold_of_the_log_gives,
    a_stopped_rebuild_run_again_and_a_version_change_give_the_same_projections,
    past_views_show_the_projections_as_they_were,
);

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TAGS: [&str; 6] = ["buyer", "seller", "vip", "cold", "relocating", "investor"];
const NAMES: [&str; 6] = [
    "Dana Whitfield",
    "Eli Moreno",
    "Ann Lee",
    "Bo Chen",
    "Cy Ortiz",
    "Dee Park",
];

/// What the generator remembers to pick valid commands.
#[derive(Default)]
struct World {
    leads: Vec<(LeadId, UserId)>,
    tasks: HashMap<LeadId, Vec<TaskId>>,
    templates: HashMap<UserId, Vec<TemplateId>>,
    /// Every lead created, archived ones too.
    ever: Vec<LeadId>,
}

/// One command of the history as the test made it: the log's head before and after
/// it, and who it was made by, as whom, in which "Log in as user" session (the one
/// the test started), if any.
#[derive(Debug, Clone, Copy)]
struct Made {
    before: i64,
    after: i64,
    actor: uuid::Uuid,
    subject: uuid::Uuid,
    session: Option<uuid::Uuid>,
}

/// Runs `steps` random commands over two sites, each through one of `apps` (servers
/// on one database) picked at random; returns the sites.
async fn random_history(apps: &[&App], seed: u64, steps: usize) -> Vec<Site> {
    random_history_made(apps, seed, steps).await.0
}

/// [`random_history`], with what the test made each command as.
async fn random_history_made(apps: &[&App], seed: u64, steps: usize) -> (Vec<Site>, Vec<Made>) {
    random_history_with(apps, seed, steps, &mut Extras::default()).await
}

/// What a history does besides its commands.
#[derive(Default)]
struct Extras {
    /// No lead is erased (a past view reads a lead erased since as erased at every
    /// position, unlike the projections then).
    no_erasures: bool,
    /// Before about this percent of the steps, the agents' screens as the
    /// projections show them, with the position they show.
    screens_percent: u64,
    /// The position, the screens, and how many leads had been made then.
    screens: Vec<(i64, Value, usize)>,
    /// Every lead made, in the order made.
    leads: Vec<LeadId>,
}

/// [`random_history_made`], with `extras`.
async fn random_history_with(
    apps: &[&App],
    seed: u64,
    steps: usize,
    extras: &mut Extras,
) -> (Vec<Site>, Vec<Made>) {
    let mut made = Vec::new();
    // Its own generator, so that the history is the same with screens or without.
    let mut screens_rng = Rng(seed ^ 0x05c4_ee45);
    let app = apps[0];
    let sites = vec![
        site(app, "Demo Realty", "demo.example").await,
        site(app, "Rival Homes", "rival.example").await,
    ];
    let mut rng = Rng(seed);
    let mut world = World::default();
    let mut acting: HashMap<UserId, RequestContext> = HashMap::new();
    // The session each admin's last "Log in as" started, as the test got it back.
    let mut sessions_started: HashMap<UserId, (uuid::Uuid, UserId)> = HashMap::new();
    for step in 0..steps {
        if screens_rng.chance(extras.screens_percent) {
            let position = app.store().head().await.unwrap().0;
            let screens = agents_screens(app, &sites, &world.ever).await;
            extras.screens.push((position, screens, world.ever.len()));
        }
        let app = if apps.len() > 1 { *rng.pick(apps) } else { app };
        let s = rng.pick(&sites);
        // Who acts: an agent as themselves, or an admin as an agent (impersonating).
        let agent = if rng.chance(50) { &s.agent1 } else { &s.agent2 };
        let admin = if rng.chance(50) { &s.admin } else { &s.admin2 };
        if rng.chance(4) {
            // Start or end an impersonation.
            if let Some(ctx) = acting.remove(&admin.id) {
                app.return_to_admin(&ctx).await.unwrap();
            } else {
                let ctx = app
                    .start_impersonation(
                        &admin.ctx,
                        agent.id,
                        reason(&format!("step {step}")),
                        ImpersonationMode::Edit,
                    )
                    .await
                    .unwrap()
                    .0;
                sessions_started.insert(
                    admin.id,
                    (ctx.impersonation().expect("a session").as_uuid(), agent.id),
                );
                acting.insert(admin.id, ctx);
            }
            continue;
        }
        if rng.chance(2) {
            let on = rng.chance(50);
            let edit = SiteSettingsEdit {
                notify_subject: Some(on),
                ..Default::default()
            };
            let before = app.store().head().await.unwrap().0;
            app.change_site_settings(&s.owner.ctx, edit, None)
                .await
                .unwrap();
            made.push(Made {
                before,
                after: app.store().head().await.unwrap().0,
                actor: s.owner.id.as_uuid(),
                subject: s.owner.id.as_uuid(),
                session: None,
            });
            continue;
        }
        let (ctx, started) = match acting.get(&admin.id) {
            Some(ctx) if rng.chance(40) => (ctx.clone(), sessions_started.get(&admin.id).copied()),
            _ => (agent.ctx.clone(), None),
        };
        // As the test chose: the admin in the session it started, on that agent;
        // or the agent as themselves.
        let (actor, made_as, session) = match started {
            Some((session, on)) => (admin.id, on, Some(session)),
            None => (agent.id, agent.id, None),
        };
        let subject = ctx.subject();
        let before = app.store().head().await.unwrap().0;
        let mut made_by: Option<(UserId, UserId, Option<uuid::Uuid>)> = None;
        let mine: Vec<LeadId> = world
            .leads
            .iter()
            .filter(|(_, a)| *a == subject)
            .map(|(id, _)| *id)
            .collect();
        let result = match rng.below(12) {
            0 | 1 => {
                let name = NAMES[rng.below(NAMES.len())];
                let mut lead = new_lead(name);
                lead.tags = Tags::parse(&[*rng.pick(&TAGS)]).unwrap();
                if rng.chance(50) {
                    lead.phone =
                        Some(Phone::parse(&format!("+1 555 {:04}", rng.below(10_000))).unwrap());
                }
                let (id, _) = app.create_lead(&ctx, lead).await.unwrap();
                world.leads.push((id, subject));
                world.ever.push(id);
                Ok(())
            }
            2 | 3 if !mine.is_empty() => {
                let lead = *rng.pick(&mine);
                let mut edit = LeadEdit::default();
                if rng.chance(40) {
                    let name = NAMES[rng.below(NAMES.len())];
                    edit.name = Some(PersonName::parse(name).unwrap());
                }
                if rng.chance(40) {
                    edit.stage = Some(*rng.pick(Stage::ALL));
                }
                if rng.chance(30) {
                    edit.email = Some(if rng.chance(20) {
                        None
                    } else {
                        Some(Email::parse(&format!("l{}@example.com", rng.below(50))).unwrap())
                    });
                }
                if rng.chance(40) {
                    let tags: Vec<&str> = TAGS.iter().copied().filter(|_| rng.chance(35)).collect();
                    edit.tags = Some(Tags::parse(&tags).unwrap());
                }
                app.edit_lead(&ctx, lead, edit, None).await.map(drop)
            }
            4 if !mine.is_empty() && rng.chance(25) => {
                // Opening a lead: recorded (LeadViewed) only while logged in as its
                // agent.
                app.lead_detail(&ctx, *rng.pick(&mine)).await.map(drop)
            }
            4 if !mine.is_empty() => app
                .add_note(
                    &ctx,
                    *rng.pick(&mine),
                    NoteBody::parse(&format!("note {step}")).unwrap(),
                )
                .await
                .map(drop),
            5 if !mine.is_empty() => {
                let lead = *rng.pick(&mine);
                let due = DueAt::parse(&format!(
                    "2027-0{}-1{}T09:00:00Z",
                    1 + rng.below(9),
                    rng.below(10)
                ))
                .unwrap();
                let (task, _) = app
                    .create_task(&ctx, lead, TaskTitle::parse("Follow up").unwrap(), due)
                    .await
                    .unwrap();
                world.tasks.entry(lead).or_default().push(task);
                Ok(())
            }
            6 if !mine.is_empty() => {
                let lead = *rng.pick(&mine);
                match world.tasks.get(&lead).filter(|t| !t.is_empty()) {
                    Some(tasks) => app
                        .complete_task(&ctx, lead, *rng.pick(tasks))
                        .await
                        .map(drop),
                    None => Ok(()),
                }
            }
            7 if !mine.is_empty() => {
                let channel = *rng.pick(&[Channel::Call, Channel::Email, Channel::Text]);
                let direction = *rng.pick(&[Direction::Inbound, Direction::Outbound]);
                app.log_communication(
                    &ctx,
                    *rng.pick(&mine),
                    channel,
                    direction,
                    Summary::parse("Talked").unwrap(),
                )
                .await
                .map(drop)
            }
            8 if !mine.is_empty() && rng.chance(30) => {
                let lead = *rng.pick(&mine);
                world.leads.retain(|(id, _)| *id != lead);
                if rng.chance(40) && !extras.no_erasures {
                    // The owner, as themselves, erases the lead's personal data.
                    made_by = Some((s.owner.id, s.owner.id, None));
                    let why = Reason::parse(&format!("forget me {step}")).unwrap();
                    app.erase_lead(&s.owner.ctx, lead, why).await.map(drop)
                } else {
                    app.archive_lead(&ctx, lead, None).await.map(drop)
                }
            }
            9 if !mine.is_empty() => {
                // The admin, as themselves, hands the lead to the other agent.
                let lead = *rng.pick(&mine);
                let to = if subject == s.agent1.id {
                    s.agent2.id
                } else {
                    s.agent1.id
                };
                // Assignment: the admin as themselves.
                made_by = Some((s.admin.id, s.admin.id, None));
                let done = app
                    .assign_lead(&s.admin.ctx, lead, to, None)
                    .await
                    .map(drop);
                for entry in world.leads.iter_mut().filter(|(id, _)| *id == lead) {
                    entry.1 = to;
                }
                done
            }
            10 => {
                let key = rng.pick(&[
                    "timezone",
                    "communication.texting_enabled",
                    "notifications.task_reminder_minutes",
                    "email_signature",
                ]);
                let value = match *key {
                    "timezone" => json!(rng.pick(&["UTC", "America/Denver", "Europe/Paris"])),
                    "communication.texting_enabled" => json!(rng.chance(50)),
                    "notifications.task_reminder_minutes" => json!(rng.below(120)),
                    _ => json!(format!("Regards, {step}")),
                };
                let change =
                    SettingsChange::parse(json!({ *key: value }).as_object().unwrap()).unwrap();
                app.change_settings(&ctx, change, None).await.map(drop)
            }
            _ => {
                let templates = world.templates.entry(subject).or_default();
                if templates.is_empty() || rng.chance(30) {
                    let (id, _) = app
                        .create_template(
                            &ctx,
                            TemplateKind::Email,
                            TemplateName::parse(&format!("T{step}")).unwrap(),
                            Some(TemplateSubject::parse("Hello").unwrap()),
                            TemplateBody::parse("Hi {name}").unwrap(),
                        )
                        .await
                        .unwrap();
                    templates.push(id);
                    Ok(())
                } else if rng.chance(20) {
                    let id = templates.swap_remove(rng.below(templates.len()));
                    app.delete_template(&ctx, id, None).await.map(drop)
                } else {
                    let id = *rng.pick(templates);
                    let edit = TemplateEdit {
                        body: Some(TemplateBody::parse(&format!("Body {step}")).unwrap()),
                        ..TemplateEdit::default()
                    };
                    app.update_template(&ctx, id, edit, None).await.map(drop)
                }
            }
        };
        match result {
            Ok(()) | Err(AppError::NotFound(_)) => {}
            Err(other) => panic!("step {step}: {other:?}"),
        }
        let (actor, made_as, session) = made_by.unwrap_or((actor, made_as, session));
        made.push(Made {
            before,
            after: app.store().head().await.unwrap().0,
            actor: actor.as_uuid(),
            subject: made_as.as_uuid(),
            session,
        });
    }
    extras.leads = world.ever;
    (sites, made)
}

/// The Lead Manager queries a screen is read with: every sort, alone and with
/// each filter.
fn screen_queries() -> Vec<LeadQuery> {
    let mut queries = Vec::new();
    for sort in [
        LeadSort::UpdatedAt,
        LeadSort::UpdatedAtDesc,
        LeadSort::Name,
        LeadSort::NextTaskDueAt,
    ] {
        let base = LeadQuery {
            sort,
            ..LeadQuery::default()
        };
        queries.push(base.clone());
        queries.push(LeadQuery {
            stage: Some(Stage::Contacted),
            ..base.clone()
        });
        queries.push(LeadQuery {
            tag: Some("vip".into()),
            ..base.clone()
        });
        queries.push(LeadQuery {
            q: Some(" EE ".into()),
            ..base
        });
    }
    queries
}

/// What each agent's screens show now, through the reads the agent makes: every
/// Lead Manager query (and one walked page by page), every lead opened (or not
/// found), the settings and templates.
async fn agents_screens(app: &App, sites: &[Site], leads: &[LeadId]) -> Value {
    let mut out = serde_json::Map::new();
    for s in sites {
        for agent in [&s.agent1, &s.agent2] {
            let key = |what: &str| format!("{} {what}", agent.email);
            for (i, query) in screen_queries().into_iter().enumerate() {
                let page = app.leads(&agent.ctx, query, None, 500).await.unwrap();
                out.insert(key(&format!("leads {i}")), json!(page));
            }
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let query = LeadQuery {
                    sort: LeadSort::Name,
                    ..LeadQuery::default()
                };
                let page = app
                    .leads(&agent.ctx, query, cursor.as_deref(), 3)
                    .await
                    .unwrap();
                cursor = page.next_cursor.clone();
                pages.push(json!(page));
                if cursor.is_none() {
                    break;
                }
            }
            out.insert(key("pages"), json!(pages));
            for id in leads {
                let detail = match app.lead_detail(&agent.ctx, *id).await {
                    Ok(detail) => json!(detail),
                    Err(AppError::NotFound(_)) => json!("not found"),
                    Err(other) => panic!("{other:?}"),
                };
                out.insert(key(&format!("lead {id}")), detail);
            }
            let (settings, version) = app.settings_view(&agent.ctx).await.unwrap();
            let templates = app.templates_view(&agent.ctx).await.unwrap();
            out.insert(key("settings"), json!([settings, version, templates]));
        }
    }
    Value::Object(out)
}

/// [`agents_screens`] as the past views show them at `position`: the Lead Manager
/// and settings as the owner sees the agent's, the leads as the agent sees their
/// own.
async fn past_screens(app: &App, sites: &[Site], leads: &[LeadId], position: i64) -> Value {
    let at = Some(At::Position(Position(position)));
    let mut out = serde_json::Map::new();
    for s in sites {
        for agent in [&s.agent1, &s.agent2] {
            let key = |what: &str| format!("{} {what}", agent.email);
            let owner = &s.owner.ctx;
            for (i, query) in screen_queries().into_iter().enumerate() {
                let past = app
                    .past_leads(owner, Some(agent.id), at, query, None, 500)
                    .await
                    .unwrap();
                assert_eq!(past.position, position);
                out.insert(key(&format!("leads {i}")), json!(past.page));
            }
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let query = LeadQuery {
                    sort: LeadSort::Name,
                    ..LeadQuery::default()
                };
                let past = app
                    .past_leads(owner, Some(agent.id), at, query, cursor.as_deref(), 3)
                    .await
                    .unwrap();
                cursor = past.page.next_cursor.clone();
                pages.push(json!(past.page));
                if cursor.is_none() {
                    break;
                }
            }
            out.insert(key("pages"), json!(pages));
            for id in leads {
                let detail = match app.past_lead(&agent.ctx, None, at, *id).await {
                    Ok(past) => json!(past.detail),
                    Err(AppError::NotFound(_)) => json!("not found"),
                    Err(other) => panic!("{other:?}"),
                };
                out.insert(key(&format!("lead {id}")), detail);
            }
            let past = app.past_settings(owner, Some(agent.id), at).await.unwrap();
            out.insert(
                key("settings"),
                json!([past.settings, past.version, past.templates]),
            );
        }
    }
    Value::Object(out)
}

/// The first difference between two screens, by key.
fn assert_same_screens(position: i64, then: &Value, past: &Value) {
    let (Some(then), Some(past)) = (then.as_object(), past.as_object()) else {
        panic!("screens are maps");
    };
    for (key, shown) in then {
        assert_eq!(
            Some(shown),
            past.get(key),
            "at position {position}, {key}: the projection then against the past view"
        );
    }
    assert_eq!(then.len(), past.len(), "as many screens at {position}");
}

async fn past_views_show_the_projections_as_they_were(db: &TestDatabase) {
    let app = app(db).await;
    let mut extras = Extras {
        no_erasures: true,
        screens_percent: 2,
        ..Extras::default()
    };
    let (sites, _) = random_history_with(&[&app], 0xA50F, 1_200, &mut extras).await;
    assert!(
        extras.screens.len() >= 10,
        "{} screens along the history",
        extras.screens.len()
    );
    let leads = extras.leads.clone();
    let mut compared = 0;
    for (position, then, made) in &extras.screens {
        let past = past_screens(&app, &sites, &leads[..*made], *position).await;
        assert_same_screens(*position, then, &past);
        // Leads made later did not exist then.
        let at = Some(At::Position(Position(*position)));
        for later in leads.iter().skip(*made).take(3) {
            for s in &sites {
                let past = app.past_lead(&s.owner.ctx, None, at, *later).await;
                assert!(matches!(past, Err(AppError::NotFound(_))), "{past:?}");
            }
        }
        compared += made;
    }
    assert!(compared > 100, "{compared} leads compared as opened");
    // The same moments named by time: the head then.
    for (position, ..) in &extras.screens {
        let recorded = app
            .store()
            .read_all(Position(position - 1), 1)
            .await
            .unwrap();
        let Some(event) = recorded.first() else {
            continue;
        };
        let past = app
            .past_settings(
                &sites[0].owner.ctx,
                Some(sites[0].agent1.id),
                Some(At::Time(event.recorded_at)),
            )
            .await
            .unwrap();
        assert_eq!(
            past.position, *position,
            "the head at {}",
            event.recorded_at
        );
    }
}

/// Everything the projections answer, in a comparable form.
async fn snapshot(app: &App, sites: &[Site]) -> Value {
    let db = app.settled(&app.projector().names()).await.unwrap();
    let mut out = serde_json::Map::new();
    let all_leads: Vec<LeadId> = lead_ids(app.store()).await;
    for s in sites {
        let people = [
            &s.owner, &s.admin, &s.admin2, &s.agent1, &s.agent2, &s.auditor,
        ];
        let mut site = serde_json::Map::new();
        site.insert("site".into(), json!(users::site(db, s.id).await.unwrap()));
        site.insert(
            "users".into(),
            json!(
                all_pages(|c| async move { users::list(db, s.id, c.as_deref(), 2).await.unwrap() })
                    .await
            ),
        );
        let filter = LeadFilter::of(Owner::Site(s.id));
        for sort in [
            LeadSort::Name,
            LeadSort::NextTaskDueAt,
            LeadSort::UpdatedAtDesc,
        ] {
            let page = all_pages(|c| {
                let filter = filter.clone();
                async move {
                    lead_manager::list(db, &filter, sort, c.as_deref(), 7)
                        .await
                        .unwrap()
                }
            })
            .await;
            site.insert(format!("leads {sort:?}"), json!(page));
        }
        for p in people {
            let owner = LeadFilter::of(Owner::AssignedTo(p.id));
            site.insert(
                format!("counts {}", p.email),
                json!(lead_manager::counts_by_stage(db, &owner).await.unwrap()),
            );
            site.insert(
                format!("settings {}", p.email),
                json!(settings::get(db, p.id).await.unwrap()),
            );
            site.insert(
                format!("templates {}", p.email),
                json!(settings::templates(db, p.id).await.unwrap()),
            );
            site.insert(
                format!("notifications {}", p.email),
                json!(
                    notifications::list(db, p.id, None, 500)
                        .await
                        .unwrap()
                        .items
                ),
            );
        }
        let sessions = all_pages(|c| async move {
            audit_trail::sessions(db, s.id, &SessionFilter::default(), c.as_deref(), 3)
                .await
                .unwrap()
        })
        .await;
        for session in &sessions {
            let id = crm_events::ids::ImpersonationId::from_uuid(session.id);
            site.insert(
                format!("session {}", session.id),
                json!(audit_trail::session_changes(db, id).await.unwrap()),
            );
        }
        site.insert("sessions".into(), json!(sessions));
        site.insert(
            "changes".into(),
            json!(
                all_pages(|c| async move {
                    audit_trail::changes(db, s.id, &ChangeFilter::default(), c.as_deref(), 97)
                        .await
                        .unwrap()
                })
                .await
            ),
        );
        out.insert(s.id.to_string(), Value::Object(site));
    }
    for lead in all_leads {
        let detail = json!({
            "lead": lead_manager::get(db, lead).await.unwrap(),
            "notes": lead_manager::notes(db, lead).await.unwrap(),
            "tasks": lead_manager::tasks(db, lead).await.unwrap(),
            "communications": lead_manager::communications(db, lead).await.unwrap(),
        });
        out.insert(lead.to_string(), detail);
    }
    Value::Object(out)
}

async fn all_pages<T, F, Fut>(mut page: F) -> Vec<T>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = crm_projections::Page<T>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let next = page(cursor.take()).await;
        items.extend(next.items);
        match next.next_cursor {
            Some(c) => cursor = Some(c),
            None => return items,
        }
    }
}

async fn lead_ids(store: &EventStore) -> Vec<LeadId> {
    let mut ids: Vec<LeadId> = store
        .read_all(Position::START, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "LeadCreated")
        .map(|e| LeadId::from_uuid(e.stream.id))
        .collect();
    ids.sort();
    ids
}

/// The independent fold: what each lead, user, template and session should look like,
/// computed straight from the events, without the projections' code.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    leads: BTreeMap<uuid::Uuid, Value>,
    users: BTreeMap<uuid::Uuid, Value>,
    settings: BTreeMap<uuid::Uuid, Value>,
    templates: BTreeMap<uuid::Uuid, Value>,
    sessions: BTreeMap<uuid::Uuid, Value>,
    notified: BTreeMap<uuid::Uuid, usize>,
}

async fn fold_independently(store: &EventStore) -> Expected {
    let mut x = Expected::default();
    let mut open_tasks: HashMap<uuid::Uuid, BTreeMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>> =
        HashMap::new();
    let mut notify: HashMap<uuid::Uuid, bool> = HashMap::new();
    for e in store.read_all(Position::START, 10_000).await.unwrap() {
        let id = e.stream.id;
        let event = DomainEvent::decode(&e).unwrap();
        match &event {
            DomainEvent::LeadCreated(c) => {
                x.leads.insert(id, json!({"name": c.name, "email": c.email, "phone": c.phone, "stage": c.stage,
                    "tags": c.tags, "assigned_agent_id": c.assigned_agent_id, "archived": false, "notes": 0,
                    "communications": 0, "last_contacted_at": null, "next_task_due_at": null}));
            }
            DomainEvent::LeadFieldsUpdated(u) => {
                for change in &u.changes {
                    x.leads.get_mut(&id).unwrap()[change.field.as_str()] = change.after.clone();
                }
            }
            DomainEvent::LeadStageChanged(c) => {
                x.leads.get_mut(&id).unwrap()["stage"] = json!(c.to)
            }
            DomainEvent::LeadReassigned(r) => {
                x.leads.get_mut(&id).unwrap()["assigned_agent_id"] = json!(r.to)
            }
            DomainEvent::LeadTagAdded(t) => x.leads.get_mut(&id).unwrap()["tags"]
                .as_array_mut()
                .unwrap()
                .push(json!(t.tag)),
            DomainEvent::LeadTagRemoved(t) => x.leads.get_mut(&id).unwrap()["tags"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != &json!(t.tag)),
            DomainEvent::LeadNoteAdded(_) => {
                let lead = x.leads.get_mut(&id).unwrap();
                lead["notes"] = json!(lead["notes"].as_i64().unwrap() + 1);
            }
            DomainEvent::LeadCommunicationLogged(_) => {
                let lead = x.leads.get_mut(&id).unwrap();
                lead["communications"] = json!(lead["communications"].as_i64().unwrap() + 1);
                lead["last_contacted_at"] = json!(e.recorded_at);
            }
            DomainEvent::LeadTaskCreated(t) => {
                open_tasks
                    .entry(id)
                    .or_default()
                    .insert(t.task_id.as_uuid(), t.due_at);
            }
            DomainEvent::LeadTaskCompleted(t) => {
                open_tasks
                    .entry(id)
                    .or_default()
                    .remove(&t.task_id.as_uuid());
            }
            DomainEvent::LeadArchived(_) => x.leads.get_mut(&id).unwrap()["archived"] = json!(true),
            DomainEvent::LeadErased(_) => {
                let lead = x.leads.get_mut(&id).unwrap();
                for field in ["name", "email", "phone"] {
                    lead[field] = Value::Null;
                }
                open_tasks.remove(&id);
            }
            DomainEvent::UserCreated(u) => {
                x.users.insert(
                    id,
                    json!({"name": u.name, "email": u.email, "role": u.role, "active": true}),
                );
            }
            DomainEvent::UserRoleChanged(c) => x.users.get_mut(&id).unwrap()["role"] = json!(c.to),
            DomainEvent::UserDeactivated(_) => {
                x.users.get_mut(&id).unwrap()["active"] = json!(false)
            }
            DomainEvent::UserReactivated(_) => {
                x.users.get_mut(&id).unwrap()["active"] = json!(true)
            }
            DomainEvent::UserSettingsChanged(c) => {
                let values = x.settings.entry(id).or_insert_with(|| json!({}));
                for change in &c.changes {
                    values[change.field.as_str()] = change.after.clone();
                }
            }
            DomainEvent::TemplateCreated(t) => {
                x.templates.insert(
                    t.template_id.as_uuid(),
                    json!({"name": t.name, "body": t.body, "version": 1}),
                );
            }
            DomainEvent::TemplateUpdated(t) => {
                let template = x.templates.get_mut(&t.template_id.as_uuid()).unwrap();
                for change in &t.changes {
                    template[change.field.as_str()] = change.after.clone();
                }
                template["version"] = json!(template["version"].as_i64().unwrap() + 1);
            }
            DomainEvent::TemplateDeleted(t) => {
                x.templates.remove(&t.template_id.as_uuid());
            }
            DomainEvent::SiteCreated(_) => {
                notify.insert(id, false);
            }
            DomainEvent::SiteSettingsChanged(c) => {
                for change in c
                    .changes
                    .iter()
                    .filter(|c| c.field == "notify_subject_on_impersonation")
                {
                    notify.insert(id, change.after == json!(true));
                }
            }
            DomainEvent::ImpersonationStarted(s) => {
                x.sessions.insert(
                    id,
                    json!({"admin_id": s.admin_id, "subject_id": s.subject_id, "reason": s.reason,
                    "end_reason": null, "changed_positions": []}),
                );
                if notify[&e.site_id.as_uuid()] {
                    *x.notified.entry(s.subject_id.as_uuid()).or_default() += 1;
                }
            }
            DomainEvent::ImpersonationEnded(end) => {
                x.sessions.get_mut(&id).unwrap()["end_reason"] = json!(end.end_reason)
            }
            _ => {}
        }
        let changes_something = !matches!(
            event,
            DomainEvent::UserLoggedIn(_)
                | DomainEvent::UserLoggedOut(_)
                | DomainEvent::ImpersonationStarted(_)
                | DomainEvent::ImpersonationEnded(_)
        );
        if let (Some(session), true) = (e.impersonation_id, changes_something) {
            let positions = x.sessions.get_mut(&session.as_uuid()).unwrap()["changed_positions"]
                .as_array_mut()
                .unwrap();
            if !positions.contains(&json!(e.position.0)) {
                positions.push(json!(e.position.0));
            }
        }
    }
    for (lead, tasks) in open_tasks {
        if let Some(due) = tasks.values().min() {
            x.leads.get_mut(&lead).unwrap()["next_task_due_at"] = json!(due);
        }
    }
    x
}

/// Reads the same facts from the projections.
async fn read_back(app: &App, sites: &[Site]) -> Expected {
    let db = app.settled(&app.projector().names()).await.unwrap();
    let mut x = Expected::default();
    for lead in lead_ids(app.store()).await {
        let l = lead_manager::get(db, lead).await.unwrap().unwrap();
        x.leads.insert(
            lead.as_uuid(),
            json!({"name": l.name, "email": l.email, "phone": l.phone, "stage": l.stage,
            "tags": l.tags, "assigned_agent_id": l.assigned_agent_id, "archived": l.archived,
            "notes": lead_manager::notes(db, lead).await.unwrap().len(),
            "communications": lead_manager::communications(db, lead).await.unwrap().len(),
            "last_contacted_at": l.last_contacted_at, "next_task_due_at": l.next_task_due_at}),
        );
    }
    for s in sites {
        for u in
            all_pages(|c| async move { users::list(db, s.id, c.as_deref(), 500).await.unwrap() })
                .await
        {
            x.users.insert(
                u.id,
                json!({"name": u.name, "email": u.email, "role": u.role, "active": u.active}),
            );
            let user = UserId::from_uuid(u.id);
            let (values, _) = settings::get(db, user).await.unwrap();
            if !values.is_empty() {
                x.settings.insert(u.id, Value::Object(values));
            }
            for t in settings::templates(db, user).await.unwrap() {
                x.templates.insert(
                    t.id,
                    json!({"name": t.name, "body": t.body, "version": t.version}),
                );
            }
            let told = notifications::list(db, user, None, 500)
                .await
                .unwrap()
                .items
                .len();
            if told > 0 {
                x.notified.insert(u.id, told);
            }
        }
        for session in audit_trail::sessions(db, s.id, &SessionFilter::default(), None, 500)
            .await
            .unwrap()
            .items
        {
            let id = crm_events::ids::ImpersonationId::from_uuid(session.id);
            let mut positions: Vec<i64> = audit_trail::session_changes(db, id)
                .await
                .unwrap()
                .iter()
                .map(|c| c.position)
                .collect();
            positions.dedup();
            let rows = audit_trail::session_changes(db, id).await.unwrap();
            assert_eq!(
                session.change_count as usize,
                rows.iter().filter(|c| c.kind == "change").count(),
                "a session's count is its number of changes (its views aside)"
            );
            x.sessions.insert(session.id, json!({"admin_id": session.admin_id, "subject_id": session.subject_id,
                "reason": session.reason, "end_reason": session.end_reason, "changed_positions": positions}));
        }
    }
    x
}

/// Every change of the history is in the audit trail as the test made it: who
/// acted, as whom, in which session (the one the test started, never read back
/// from the log), and every command that appended left changes.
async fn assert_changes_as_made(app: &App, sites: &[Site], made: &[Made]) {
    let first = made.first().map_or(0, |m| m.before);
    let mut per_step = vec![0usize; made.len()];
    for s in sites {
        for c in all_changes(app, s)
            .await
            .iter()
            .filter(|c| c.position > first)
        {
            let i = made.partition_point(|m| m.after < c.position);
            let m = made
                .get(i)
                .filter(|m| m.before < c.position)
                .unwrap_or_else(|| panic!("the change at {} comes from no command", c.position));
            assert_eq!(
                (c.actor_id, c.subject_id, c.impersonation_id),
                (m.actor, m.subject, m.session),
                "the change at position {} ({} {})",
                c.position,
                c.event_type,
                c.field
            );
            per_step[i] += 1;
        }
    }
    for (m, n) in made.iter().zip(&per_step) {
        assert!(
            m.after == m.before || *n > 0,
            "{m:?} appended, yet left no change in the audit trail"
        );
    }
    let impersonated = made
        .iter()
        .filter(|m| m.session.is_some() && m.after > m.before)
        .count();
    assert!(
        impersonated > 50,
        "{impersonated} commands made while logged in as an agent"
    );
}

/// Every audit change of a site, in log order, page by page.
async fn all_changes(app: &App, s: &Site) -> Vec<audit_trail::Change> {
    let db = app.settled(&app.projector().names()).await.unwrap();
    let filter = ChangeFilter {
        order: crm_projections::query::Order::OldestFirst,
        ..ChangeFilter::default()
    };
    all_pages(|c| {
        let filter = filter.clone();
        async move {
            audit_trail::changes(db, s.id, &filter, c.as_deref(), 500)
                .await
                .unwrap()
        }
    })
    .await
}

/// One audit change as a tuple: position, entity, field, before, after.
type ChangeRow = (i64, uuid::Uuid, String, Value, Value);

/// The audit trail's changes, folded from the log by the test itself: every "before"
/// is what the test's own fold of the earlier events holds for that field (never
/// the event's own `before`, nor the projection's), every "after" what the event
/// made it; the fields each kind of event changes are those of the contract (as in
/// `audit_table.rs`). Site settings start at DESIGN's defaults; a user setting
/// never set before starts at its default, which must be the same for every user.
async fn audit_folded_independently(store: &EventStore) -> Vec<ChangeRow> {
    let mut rows = Vec::new();
    let mut leads: HashMap<uuid::Uuid, Value> = HashMap::new();
    let mut open_tasks: HashMap<uuid::Uuid, bool> = HashMap::new();
    let mut templates: HashMap<uuid::Uuid, Value> = HashMap::new();
    let mut settings: HashMap<uuid::Uuid, HashMap<String, Value>> = HashMap::new();
    let mut setting_defaults: HashMap<String, Value> = HashMap::new();
    let mut users: HashMap<uuid::Uuid, Value> = HashMap::new();
    let site_defaults = json!({"impersonation_enabled": true, "impersonation_max_minutes": 60,
        "impersonation_reason_required": true, "notify_subject_on_impersonation": false});
    let mut sites: HashMap<uuid::Uuid, Value> = HashMap::new();
    let non_null = |fields: Vec<(&str, Value)>| -> Vec<(String, Value)> {
        fields
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(f, v)| (f.to_owned(), v))
            .collect()
    };
    for e in store.read_all(Position::START, 100_000).await.unwrap() {
        let at = e.position.0;
        let id = e.stream.id;
        let mut push = |entity: uuid::Uuid, field: &str, before: Value, after: Value| {
            rows.push((at, entity, field.to_owned(), before, after));
        };
        match DomainEvent::decode(&e).unwrap() {
            DomainEvent::SiteCreated(s) => {
                sites.insert(id, site_defaults.clone());
                push(id, "name", Value::Null, json!(s.name));
            }
            DomainEvent::SiteSettingsChanged(c) => {
                let site = sites.get_mut(&id).unwrap();
                for change in c.changes {
                    push(
                        id,
                        &change.field,
                        site[&change.field].clone(),
                        change.after.clone(),
                    );
                    site[&change.field] = change.after;
                }
            }
            DomainEvent::UserCreated(u) => {
                users.insert(id, json!({"role": u.role, "active": true}));
                let fields = vec![
                    ("name", json!(u.name)),
                    ("email", json!(u.email)),
                    ("role", json!(u.role)),
                ];
                for (f, v) in non_null(fields) {
                    push(id, &f, Value::Null, v);
                }
            }
            DomainEvent::UserRoleChanged(c) => {
                let user = users.get_mut(&id).unwrap();
                push(id, "role", user["role"].clone(), json!(c.to));
                user["role"] = json!(c.to);
            }
            DomainEvent::UserDeactivated(_) | DomainEvent::UserReactivated(_) => {
                let user = users.get_mut(&id).unwrap();
                let after = json!(!user["active"].as_bool().unwrap());
                push(id, "active", user["active"].clone(), after.clone());
                user["active"] = after;
            }
            DomainEvent::LeadCreated(c) => {
                let fields = vec![
                    ("name", json!(c.name)),
                    ("email", json!(c.email)),
                    ("phone", json!(c.phone)),
                    ("source", json!(c.source)),
                    ("stage", json!(c.stage)),
                    ("tags", json!(c.tags)),
                    ("assigned_agent_id", json!(c.assigned_agent_id)),
                ];
                let mut lead = json!({"archived": false});
                for (f, v) in &fields {
                    lead[*f] = v.clone();
                }
                leads.insert(id, lead);
                for (f, v) in non_null(fields) {
                    push(id, &f, Value::Null, v);
                }
            }
            DomainEvent::LeadFieldsUpdated(u) => {
                let lead = leads.get_mut(&id).unwrap();
                for change in u.changes {
                    push(
                        id,
                        &change.field,
                        lead[&change.field].clone(),
                        change.after.clone(),
                    );
                    lead[&change.field] = change.after;
                }
            }
            DomainEvent::LeadStageChanged(c) => {
                let lead = leads.get_mut(&id).unwrap();
                push(id, "stage", lead["stage"].clone(), json!(c.to));
                lead["stage"] = json!(c.to);
            }
            DomainEvent::LeadReassigned(r) => {
                let lead = leads.get_mut(&id).unwrap();
                push(
                    id,
                    "assigned_agent_id",
                    lead["assigned_agent_id"].clone(),
                    json!(r.to),
                );
                lead["assigned_agent_id"] = json!(r.to);
            }
            DomainEvent::LeadTagAdded(t) => {
                let tags = leads.get_mut(&id).unwrap()["tags"].as_array_mut().unwrap();
                assert!(!tags.contains(&json!(t.tag)), "a tag added once");
                tags.push(json!(t.tag));
                push(id, "tag", Value::Null, json!(t.tag));
            }
            DomainEvent::LeadTagRemoved(t) => {
                let tags = leads.get_mut(&id).unwrap()["tags"].as_array_mut().unwrap();
                let had = tags.len();
                tags.retain(|v| v != &json!(t.tag));
                assert_eq!(tags.len() + 1, had, "a tag removed was there");
                push(id, "tag", json!(t.tag), Value::Null);
            }
            DomainEvent::LeadNoteAdded(n) => {
                push(
                    id,
                    "note",
                    Value::Null,
                    json!({"id": n.note_id, "body": n.body}),
                );
            }
            DomainEvent::LeadTaskCreated(t) => {
                open_tasks.insert(t.task_id.as_uuid(), true);
                let task = json!({"id": t.task_id, "title": t.title, "due_at": t.due_at});
                push(id, "task", Value::Null, task);
            }
            DomainEvent::LeadTaskCompleted(t) => {
                let open = open_tasks.insert(t.task_id.as_uuid(), false);
                assert_eq!(open, Some(true), "a task completed was open");
                let task = |done: bool| json!({"id": t.task_id, "completed": done});
                push(id, "task", task(false), task(true));
            }
            DomainEvent::LeadCommunicationLogged(c) => {
                let logged = json!({"id": c.communication_id, "channel": c.channel,
                    "direction": c.direction, "summary": c.summary});
                push(id, "communication", Value::Null, logged);
            }
            DomainEvent::LeadArchived(_) => {
                let lead = leads.get_mut(&id).unwrap();
                push(id, "archived", lead["archived"].clone(), json!(true));
                lead["archived"] = json!(true);
            }
            DomainEvent::LeadErased(e) => {
                push(id, "erased", json!(false), json!(true));
                push(id, "reason", Value::Null, json!(e.reason));
            }
            DomainEvent::LeadViewed(v) => {
                push(v.lead_id.as_uuid(), "viewed", Value::Null, Value::Null)
            }
            DomainEvent::UserSettingsChanged(c) => {
                let values = settings.entry(id).or_default();
                for change in c.changes {
                    let before = match values.get(&change.field) {
                        Some(value) => value.clone(),
                        None => setting_defaults
                            .entry(change.field.clone())
                            .or_insert_with(|| change.before.clone())
                            .clone(),
                    };
                    push(id, &change.field, before, change.after.clone());
                    values.insert(change.field, change.after);
                }
            }
            DomainEvent::TemplateCreated(t) => {
                let fields = vec![
                    ("kind", json!(t.kind)),
                    ("name", json!(t.name)),
                    ("subject", json!(t.subject)),
                    ("body", json!(t.body)),
                ];
                let mut template = json!({});
                for (f, v) in &fields {
                    template[*f] = v.clone();
                }
                let template_id = t.template_id.as_uuid();
                templates.insert(template_id, template);
                for (f, v) in non_null(fields) {
                    push(template_id, &f, Value::Null, v);
                }
            }
            DomainEvent::TemplateUpdated(t) => {
                let template_id = t.template_id.as_uuid();
                let template = templates.get_mut(&template_id).unwrap();
                for change in t.changes {
                    push(
                        template_id,
                        &change.field,
                        template[&change.field].clone(),
                        change.after.clone(),
                    );
                    template[&change.field] = change.after;
                }
            }
            DomainEvent::TemplateDeleted(t) => {
                let template_id = t.template_id.as_uuid();
                let template = templates.remove(&template_id).unwrap();
                for f in ["kind", "name", "subject", "body"] {
                    if !template[f].is_null() {
                        push(template_id, f, template[f].clone(), Value::Null);
                    }
                }
            }
            DomainEvent::UserLoggedIn(_)
            | DomainEvent::UserLoggedOut(_)
            | DomainEvent::NotificationsRead(_)
            | DomainEvent::ImpersonationStarted(_)
            | DomainEvent::ImpersonationEnded(_) => {}
            other => panic!("the history made an event this fold does not know: {other:?}"),
        }
    }
    rows.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    rows
}

/// The audit trail's changes of every site, as the tuples above.
async fn audit_read_back(app: &App, sites: &[Site]) -> Vec<ChangeRow> {
    let mut rows = Vec::new();
    for s in sites {
        rows.extend(
            all_changes(app, s)
                .await
                .into_iter()
                .map(|c| (c.position, c.entity_id, c.field, c.before, c.after)),
        );
    }
    rows.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    rows
}

/// The audit trail holds exactly the changes the independent fold gives, with
/// their before and after; the first difference is named.
fn assert_same_changes(trail: &[ChangeRow], folded: &[ChangeRow]) {
    for (got, want) in trail.iter().zip(folded) {
        assert_eq!(got, want, "the audit trail's change against the fold's");
    }
    assert_eq!(
        trail.len(),
        folded.len(),
        "as many changes as the fold gives"
    );
}

async fn incremental_rebuilt_and_independently_folded_projections_agree(db: &TestDatabase) {
    let app = app(db).await;
    let (sites, made) = random_history_made(&[&app], 0x5EED_CAFE, 2_400).await;
    assert_changes_as_made(&app, &sites, &made).await;
    let head = app.store().head().await.unwrap();
    assert!(head.0 > 2_000, "a history of thousands of events: {head}");

    let incremental = snapshot(&app, &sites).await;
    let expected = fold_independently(app.store()).await;
    assert!(
        expected.sessions.len() > 10 && expected.leads.len() > 50,
        "the history exercised the projections"
    );
    let erased = expected
        .leads
        .values()
        .filter(|l| l["name"].is_null())
        .count();
    assert!(erased > 2, "{erased} leads erased along the history");
    let projected = read_back(&app, &sites).await;
    assert_same(&projected, &expected);
    // Which positions each session changed, from what the test did alone.
    let mut as_made: BTreeMap<uuid::Uuid, Vec<i64>> = projected
        .sessions
        .keys()
        .map(|id| (*id, Vec::new()))
        .collect();
    for m in &made {
        if let Some(session) = m.session {
            as_made
                .get_mut(&session)
                .expect("a session the test started is listed")
                .extend(m.before + 1..=m.after);
        }
    }
    for (id, session) in &projected.sessions {
        assert_eq!(
            session["changed_positions"],
            json!(as_made[id]),
            "the positions changed in session {id}"
        );
    }
    let folded = audit_folded_independently(app.store()).await;
    assert!(folded.len() > 3_000, "{} changes", folded.len());
    let viewed = folded.iter().filter(|row| row.2 == "viewed").count();
    assert!(
        viewed > 5,
        "{viewed} leads opened while logged in as their agent"
    );
    assert_same_changes(&audit_read_back(&app, &sites).await, &folded);

    let names = app.projector().names();
    let reached = app.projector().rebuild(&names, &|_| {}).await.unwrap();
    assert_eq!(reached, head);
    let rebuilt = snapshot(&app, &sites).await;
    assert!(
        incremental == rebuilt,
        "rebuilt projections differ from the incremental ones"
    );
    assert_changes_as_made(&app, &sites, &made).await;
    assert_same_changes(&audit_read_back(&app, &sites).await, &folded);
}

/// Each server folds its own appends in batches, later than it acknowledges them;
/// appends of the other server fall between them. Whatever either server leaves
/// for later, both read what they wrote at once, and in the end the projections are
/// what a fold of the log gives.
async fn two_servers_writing_by_turns_leave_the_projections_a_fold_of_the_log_gives(
    db: &TestDatabase,
) {
    let one = app(db).await;
    let other = app(db).await;
    let sites = random_history(&[&one, &other], 0x0DD_BA11, 600).await;
    // Each server's latest write, read back through the other: it is there.
    let lead = lead_of(&other, &sites[0].agent1.ctx, "Written by other").await;
    assert!(one.lead_detail(&sites[0].agent1.ctx, lead).await.is_ok());
    let lead = lead_of(&one, &sites[1].agent1.ctx, "Written by one").await;
    assert!(other.lead_detail(&sites[1].agent1.ctx, lead).await.is_ok());

    let expected = fold_independently(one.store()).await;
    assert!(
        expected.leads.len() > 20,
        "the history exercised the projections"
    );
    for app in [&one, &other] {
        assert_same(&read_back(app, &sites).await, &expected);
    }
}

/// Each projection read back equals its independent fold.
fn assert_same(projected: &Expected, expected: &Expected) {
    assert_eq!(projected.leads, expected.leads);
    assert_eq!(projected.users, expected.users);
    assert_eq!(projected.settings, expected.settings);
    assert_eq!(projected.templates, expected.templates);
    assert_eq!(projected.sessions, expected.sessions);
    assert_eq!(projected.notified, expected.notified);
}

async fn a_stopped_rebuild_run_again_and_a_version_change_give_the_same_projections(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let sites = random_history(&[&app], 0xFACE_B00C, 1_500).await;
    let before = snapshot(&app, &sites).await;
    let head = app.store().head().await.unwrap();

    // Stop a rebuild after its first batch: the projections are consistent but behind.
    let projector = app.projector();
    let (first_batch, mut reached) = tokio::sync::mpsc::unbounded_channel::<Position>();
    let names = projector.names();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let report = move |p| {
            let _ = first_batch.send(p);
        };
        let rebuild = projector.rebuild(&names, &report);
        // The report is looked at first: a catch-up yields after each batch, so the
        // rebuild is stopped right after its first one (the follower, woken by the
        // history's last notifications, waits for the rebuild instead of folding
        // the batches unreported).
        tokio::select! {
            biased;
            p = reached.recv() => p.unwrap(),
            ended = rebuild => panic!("the rebuild should be stopped before it ends: {ended:?}"),
        }
    })
    .await
    .unwrap();
    assert!(stopped < head);
    let checkpoints = projector.checkpoints().await.unwrap();
    assert!(checkpoints.iter().all(|c| c.position <= stopped));
    // The rebuild had set the secondary indexes aside; the next start creates them.
    let indexes = index_count(&app).await;
    assert!(deferred_indexes(&app).await > 0);
    Projector::open(app.store().clone(), crm_projections::all())
        .await
        .unwrap();
    assert_eq!(deferred_indexes(&app).await, 0);
    let all_indexes = index_count(&app).await;
    assert!(all_indexes > indexes, "{all_indexes} > {indexes}");
    // Running it again finishes the job, and creates the indexes again.
    projector.rebuild(&names, &|_| {}).await.unwrap();
    assert_eq!(index_count(&app).await, all_indexes);
    assert_eq!(deferred_indexes(&app).await, 0);
    assert!(
        snapshot(&app, &sites).await == before,
        "a stopped rebuild run again gives the same projections"
    );

    // A projection whose version changed is rebuilt when the next process starts.
    crm_events::on_pool!(
        app.settled(&app.projector().names()).await.unwrap(),
        |pool| {
            sqlx::query(
        "UPDATE projection_checkpoints SET version = 0, position = 3 WHERE name = 'lead_manager'"
    )
    .execute(pool)
    .await
    .map(drop)
    .unwrap()
        }
    );
    let store = db.store().await;
    let restarted = Projector::start(store.clone(), crm_projections::all())
        .await
        .unwrap();
    let lead_manager = restarted
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "lead_manager")
        .unwrap();
    let version = crm_projections::Projection::version(&lead_manager::LeadManager::default());
    assert_eq!(
        (lead_manager.version, lead_manager.position),
        (version, head)
    );
    let again = App::start(store, crm::app::Clock::system()).await.unwrap();
    assert!(
        snapshot(&again, &sites).await == before,
        "the version change rebuilt lead_manager to the same rows"
    );
}

/// How many indexes the database has.
async fn index_count(app: &App) -> i64 {
    let sql = match app.settled(&app.projector().names()).await.unwrap() {
        crm_events::Database::Sqlite(_) => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'"
        }
        crm_events::Database::Postgres(_) => {
            "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema()"
        }
    };
    crm_events::on_pool!(
        app.settled(&app.projector().names()).await.unwrap(),
        |pool| sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    )
}

/// How many indexes a rebuild has set aside.
async fn deferred_indexes(app: &App) -> i64 {
    crm_events::on_pool!(
        app.settled(&app.projector().names()).await.unwrap(),
        |pool| sqlx::query_scalar("SELECT COUNT(*) FROM projection_deferred_indexes")
            .fetch_one(pool)
            .await
            .unwrap()
    )
}
