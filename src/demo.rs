//! `crm serve --demo`: a site to try everything on, seeded once.

use crm_events::catalog::values::{Channel, Direction, Role, Stage, TemplateKind};
use crm_events::ids::CorrelationId;

use crm::app::{App, AppError, RequestContext};
use crm::domain::lead::NewLead;
use crm::domain::values::{
    DueAt, Email, LeadSource, NoteBody, Password, PersonName, Phone, SiteName, Summary, Tags,
    TaskTitle, TemplateBody, TemplateName, TemplateSubject,
};

/// Everyone's password on the demo site.
pub const PASSWORD: &str = "demo-password";

/// The demo's sign-ins: email and role.
pub const LOGINS: [(&str, &str); 9] = [
    ("owner@demo.example", "owner"),
    ("admin@demo.example", "admin"),
    ("admin2@demo.example", "admin"),
    ("agent1@demo.example", "agent"),
    ("agent2@demo.example", "agent"),
    ("agent3@demo.example", "agent"),
    ("agent4@demo.example", "agent"),
    ("agent5@demo.example", "agent"),
    ("auditor@demo.example", "auditor"),
];

const FIRST: [&str; 12] = [
    "Dana", "Eli", "Ann", "Bo", "Cy", "Dee", "Finn", "Gia", "Hal", "Ivy", "Jo", "Kai",
];
const LAST: [&str; 10] = [
    "Whitfield",
    "Moreno",
    "Lee",
    "Chen",
    "Ortiz",
    "Park",
    "Novak",
    "Reyes",
    "Shaw",
    "Tran",
];
const SOURCES: [&str; 5] = ["zillow", "website", "referral", "open house", "realtor.com"];
const TAGS: [&str; 6] = [
    "buyer",
    "seller",
    "vip",
    "relocating",
    "first-time",
    "investor",
];

/// Seeds "Demo Realty" unless it is there already. Returns whether it seeded.
///
/// # Errors
/// Store failures.
pub async fn seed(app: &App) -> Result<bool, AppError> {
    let password = || Password::parse(PASSWORD).map_err(|e| AppError::invalid("password", e));
    let email = |e: &str| Email::parse(e).map_err(|why| AppError::invalid("email", why));
    let name = |n: &str| PersonName::parse(n).map_err(|why| AppError::invalid("name", why));
    let created = match app
        .create_site(
            SiteName::parse("Demo Realty").map_err(|why| AppError::invalid("name", why))?,
            name("Olivia Owner")?,
            email("owner@demo.example")?,
            password()?,
        )
        .await
    {
        Ok(created) => created,
        // The owner's email is taken: seeded before.
        Err(AppError::Conflict(_)) => return Ok(false),
        Err(other) => return Err(other),
    };
    let operator = app.operator(created.site_id);
    let people = [
        ("Adam Admin", "admin@demo.example", Role::Admin),
        ("Alice Admin", "admin2@demo.example", Role::Admin),
        ("Agnes Agent", "agent1@demo.example", Role::Agent),
        ("Arlo Agent", "agent2@demo.example", Role::Agent),
        ("Ava Agent", "agent3@demo.example", Role::Agent),
        ("Abe Agent", "agent4@demo.example", Role::Agent),
        ("Ada Agent", "agent5@demo.example", Role::Agent),
        ("Audrey Auditor", "auditor@demo.example", Role::Auditor),
    ];
    let mut agents = Vec::new();
    for (full_name, address, role) in people {
        app.create_user(
            &operator,
            name(full_name)?,
            email(address)?,
            role,
            password()?,
        )
        .await?;
        if role == Role::Agent {
            let (_, ctx) = app
                .login(address, PASSWORD, CorrelationId::generate())
                .await?;
            agents.push(ctx);
        }
    }
    let seeding = agents
        .iter()
        .enumerate()
        .map(|(i, ctx)| seed_agent(app, ctx, i));
    for result in futures_util::future::join_all(seeding).await {
        result?;
    }
    Ok(true)
}

/// Sixty leads per agent, with notes, tasks, communications and two templates.
async fn seed_agent(app: &App, ctx: &RequestContext, agent: usize) -> Result<(), AppError> {
    let invalid = |field: &'static str| move |why: String| AppError::invalid(field, why);
    for n in 0..60 {
        let k = agent * 60 + n;
        let stage = Stage::ALL[k % Stage::ALL.len()];
        let lead = NewLead {
            name: PersonName::parse(&format!(
                "{} {}",
                FIRST[k % FIRST.len()],
                LAST[(k / 3) % LAST.len()]
            ))
            .map_err(invalid("name"))?,
            email: Some(Email::parse(&format!("lead{k}@example.com")).map_err(invalid("email"))?),
            phone: Some(
                Phone::parse(&format!("+1 555 01{:02}", k % 100)).map_err(invalid("phone"))?,
            ),
            source: Some(LeadSource::parse(SOURCES[k % SOURCES.len()]).map_err(invalid("source"))?),
            stage,
            tags: Tags::parse(&[TAGS[k % TAGS.len()], TAGS[(k / 2) % TAGS.len()]])
                .map_err(invalid("tags"))?,
            assigned_agent_id: None,
        };
        let (id, _) = app.create_lead(ctx, lead).await?;
        if n % 2 == 0 {
            app.add_note(
                ctx,
                id,
                NoteBody::parse("Prefers a call after 5pm.").map_err(invalid("body"))?,
            )
            .await?;
        }
        if n % 3 == 0 {
            let due = DueAt::parse(&format!(
                "2026-12-{:02}T{:02}:00:00Z",
                1 + k % 28,
                9 + k % 8
            ))
            .map_err(invalid("due_at"))?;
            app.create_task(
                ctx,
                id,
                TaskTitle::parse("Follow up").map_err(invalid("title"))?,
                due,
            )
            .await?;
        }
        if n % 4 == 0 {
            let channel = [Channel::Call, Channel::Email, Channel::Text][k % 3];
            let summary = Summary::parse("Talked about the listings in their price range.")
                .map_err(invalid("summary"))?;
            app.log_communication(ctx, id, channel, Direction::Outbound, summary)
                .await?;
        }
    }
    app.create_template(
        ctx,
        TemplateKind::Email,
        TemplateName::parse("New lead welcome").map_err(invalid("name"))?,
        Some(TemplateSubject::parse("Great to meet you").map_err(invalid("subject"))?),
        TemplateBody::parse(
            "Hi {first_name}, thanks for reaching out! When is a good time to talk?",
        )
        .map_err(invalid("body"))?,
    )
    .await?;
    app.create_template(
        ctx,
        TemplateKind::Text,
        TemplateName::parse("Showing reminder").map_err(invalid("name"))?,
        None,
        TemplateBody::parse("Reminder: our showing is tomorrow. Reply C to confirm.")
            .map_err(invalid("body"))?,
    )
    .await?;
    Ok(())
}
