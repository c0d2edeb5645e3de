//! A world to run commands in: one app on a fresh database, with a site of every role.

#![allow(dead_code)]

pub mod browser;
pub mod http;
pub mod serve;

use crm::app::{App, Clock, RequestContext};
use crm::domain::lead::NewLead;
use crm::domain::values::{Email, Password, PersonName, Reason, SiteName, Tags};
use crm_events::catalog::values::{Role, Stage};
use crm_events::ids::{CorrelationId, LeadId, SiteId, UserId};
use crm_events::testing::TestDatabase;
use crm_events::{Position, RecordedEvent};

pub const PASSWORD: &str = "demo-password";

/// One signed-in user.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: UserId,
    pub email: String,
    pub token: String,
    pub ctx: RequestContext,
}

/// A site with an owner, two admins, two agents and an auditor, all signed in.
#[derive(Debug, Clone)]
pub struct Site {
    pub id: SiteId,
    pub owner: Person,
    pub admin: Person,
    pub admin2: Person,
    pub agent1: Person,
    pub agent2: Person,
    pub auditor: Person,
}

pub async fn app(db: &TestDatabase) -> App {
    App::start(db.store().await, Clock::system()).await.unwrap()
}

pub async fn login(app: &App, email: &str) -> Person {
    let (token, ctx) = app
        .login(email, PASSWORD, CorrelationId::generate())
        .await
        .unwrap();
    Person {
        id: ctx.actor(),
        email: email.to_owned(),
        token,
        ctx,
    }
}

/// Creates a site named `name` whose users' emails end in `@<domain>`.
pub async fn site(app: &App, name: &str, domain: &str) -> Site {
    let owner_email = format!("owner@{domain}");
    let created = app
        .create_site(
            SiteName::parse(name).unwrap(),
            PersonName::parse("Olivia Owner").unwrap(),
            Email::parse(&owner_email).unwrap(),
            Password::parse(PASSWORD).unwrap(),
        )
        .await
        .unwrap();
    let owner = login(app, &owner_email).await;
    let mut people = Vec::new();
    for (local, role) in [
        ("admin", Role::Admin),
        ("admin2", Role::Admin),
        ("agent1", Role::Agent),
        ("agent2", Role::Agent),
        ("auditor", Role::Auditor),
    ] {
        let email = format!("{local}@{domain}");
        app.create_user(
            &owner.ctx,
            PersonName::parse(local).unwrap(),
            Email::parse(&email).unwrap(),
            role,
            Password::parse(PASSWORD).unwrap(),
        )
        .await
        .unwrap();
        people.push(login(app, &email).await);
    }
    let [admin, admin2, agent1, agent2, auditor] = people.try_into().unwrap();
    Site {
        id: created.site_id,
        owner,
        admin,
        admin2,
        agent1,
        agent2,
        auditor,
    }
}

/// The context a person's next request would have (re-authenticated from the token).
pub async fn again(app: &App, person: &Person) -> RequestContext {
    app.authenticate(&person.token, CorrelationId::generate(), None)
        .await
        .unwrap()
}

pub fn new_lead(name: &str) -> NewLead {
    NewLead {
        name: PersonName::parse(name).unwrap(),
        email: Some(Email::parse("lead@example.com").unwrap()),
        phone: None,
        source: None,
        stage: Stage::New,
        tags: Tags::parse(&["buyer"]).unwrap(),
        assigned_agent_id: None,
    }
}

pub async fn lead_of(app: &App, ctx: &RequestContext, name: &str) -> LeadId {
    app.create_lead(ctx, new_lead(name)).await.unwrap().0
}

/// Every event after `after`.
pub async fn events_after(app: &App, after: Position) -> Vec<RecordedEvent> {
    app.store().read_all(after, 10_000).await.unwrap()
}

/// A "Log in as user" reason as the edge passes it: blank is none.
pub fn reason(text: &str) -> Option<Reason> {
    Some(text.trim())
        .filter(|t| !t.is_empty())
        .map(|t| Reason::parse(t).unwrap())
}

pub async fn head(app: &App) -> Position {
    app.store().head().await.unwrap()
}
