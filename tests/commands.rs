//! The command side on both backends: tagging of actor and subject, lead visibility,
//! users, settings, no-op and stale writes, secrets kept out of the log, sites apart.

mod support;

use crm::app::AppError;
use crm::domain::lead::{LeadEdit, NewLead};
use crm::domain::settings::{SettingsChange, TemplateEdit};
use crm::domain::values::{
    DueAt, Email, NoteBody, Password, PersonName, Summary, TaskTitle, TemplateBody, TemplateName,
    TemplateSubject,
};
use crm_events::backend_tests;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::catalog::values::{Channel, Direction, Role, Stage, TemplateKind};
use crm_events::ids::UserId;
use crm_events::testing::TestDatabase;
use crm_events::{Position, RecordedEvent};
use serde_json::json;
use support::*;

backend_tests!(
    the_same_changes_as_the_agent_and_as_an_impersonating_admin_differ_only_in_actor_and_impersonation,
    agents_work_only_their_own_leads_and_others_are_not_found,
    every_lead_command_records_its_facts,
    a_change_that_changes_nothing_appends_nothing_and_a_stale_version_conflicts,
    users_are_managed_by_role_and_emails_are_unique,
    no_password_hash_or_token_enters_the_log,
    nothing_crosses_sites,
    a_retried_command_with_the_same_idempotency_key_lands_once,
    a_copy_of_a_lead_kept_by_one_process_never_decides_after_another_changed_it,
    an_append_folds_the_lead_row_as_stored_after_another_process_or_a_rebuild_wrote_it,
);

fn settings_change(value: serde_json::Value) -> SettingsChange {
    SettingsChange::parse(value.as_object().unwrap()).unwrap()
}

/// Runs the seed scenario's changes in `ctx` on `lead`; returns the events appended.
async fn make_changes(
    app: &crm::app::App,
    ctx: &crm::app::RequestContext,
    lead: crm_events::ids::LeadId,
) -> Vec<RecordedEvent> {
    let before = head(app).await;
    let edit = LeadEdit {
        phone: Some(Some(
            crm::domain::values::Phone::parse("+1 555 0100").unwrap(),
        )),
        stage: Some(Stage::Contacted),
        ..LeadEdit::default()
    };
    app.edit_lead(ctx, lead, edit, None).await.unwrap();
    app.change_settings(
        ctx,
        settings_change(json!({"timezone": "America/Denver"})),
        None,
    )
    .await
    .unwrap();
    events_after(app, before).await
}

async fn the_same_changes_as_the_agent_and_as_an_impersonating_admin_differ_only_in_actor_and_impersonation(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let first = lead_of(&app, &s.agent1.ctx, "Dana").await;
    let second = lead_of(&app, &s.agent1.ctx, "Dana").await;

    let as_agent = make_changes(&app, &s.agent1.ctx, first).await;
    // Put the setting back, so the second run makes the very same change.
    app.change_settings(
        &s.agent1.ctx,
        settings_change(json!({"timezone": "UTC"})),
        None,
    )
    .await
    .unwrap();
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Update Dana"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    let as_admin = make_changes(&app, &acting, second).await;

    assert_eq!(as_agent.len(), 3, "fields, stage, settings");
    assert_eq!(as_admin.len(), as_agent.len());
    for (agent, admin) in as_agent.iter().zip(&as_admin) {
        assert_eq!(agent.event_type, admin.event_type);
        assert_eq!(agent.payload, admin.payload, "{}", agent.event_type);
        assert_eq!(agent.stream.stream_type, admin.stream.stream_type);
        assert_eq!(agent.site_id, admin.site_id);
        assert_eq!(
            (agent.subject_id, admin.subject_id),
            (s.agent1.id, s.agent1.id),
            "both act as the agent"
        );
        assert_eq!(
            (agent.actor_id, admin.actor_id),
            (s.agent1.id, s.admin.id),
            "the actor differs"
        );
        assert_eq!(
            (agent.impersonation_id, admin.impersonation_id),
            (None, acting.impersonation())
        );
    }
}

async fn agents_work_only_their_own_leads_and_others_are_not_found(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let dana = lead_of(&app, &s.agent1.ctx, "Dana").await;
    let before = head(&app).await;

    let not_found = |e: AppError| matches!(e, AppError::NotFound("lead"));
    assert!(not_found(app.lead(&s.agent2.ctx, dana).await.unwrap_err()));
    assert!(not_found(
        app.edit_lead(&s.agent2.ctx, dana, LeadEdit::default(), None)
            .await
            .unwrap_err()
    ));
    assert!(not_found(
        app.add_note(&s.agent2.ctx, dana, NoteBody::parse("hi").unwrap())
            .await
            .unwrap_err()
    ));
    assert!(not_found(
        app.archive_lead(&s.agent2.ctx, dana, None)
            .await
            .unwrap_err()
    ));
    assert!(not_found(
        app.lead(&s.agent1.ctx, crm_events::ids::LeadId::generate())
            .await
            .unwrap_err()
    ));
    let reassign = app
        .assign_lead(&s.agent1.ctx, dana, s.agent2.id, None)
        .await
        .unwrap_err();
    assert!(matches!(reassign, AppError::Forbidden(_)), "{reassign:?}");
    let mut for_other = new_lead("Eli");
    for_other.assigned_agent_id = Some(s.agent2.id);
    assert!(matches!(
        app.create_lead(&s.agent1.ctx, for_other).await.unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert!(matches!(
        app.create_lead(&s.auditor.ctx, new_lead("Eli"))
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert_eq!(head(&app).await, before, "nothing refused was appended");

    // Owners and admins see every lead of their site and reassign them.
    assert!(app.lead(&s.owner.ctx, dana).await.is_ok());
    app.assign_lead(&s.admin.ctx, dana, s.agent2.id, None)
        .await
        .unwrap();
    assert!(app.lead(&s.agent2.ctx, dana).await.is_ok());
    assert!(not_found(app.lead(&s.agent1.ctx, dana).await.unwrap_err()));
    let to_auditor = app
        .assign_lead(&s.admin.ctx, dana, s.auditor.id, None)
        .await
        .unwrap_err();
    assert!(
        matches!(to_auditor, AppError::Validation(_)),
        "{to_auditor:?}"
    );
}

async fn every_lead_command_records_its_facts(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let ctx = &s.agent1.ctx;
    let before = head(&app).await;
    let lead = lead_of(&app, ctx, "Dana").await;
    app.add_note(ctx, lead, NoteBody::parse("Prefers texts").unwrap())
        .await
        .unwrap();
    let (task, _) = app
        .create_task(
            ctx,
            lead,
            TaskTitle::parse("Call back").unwrap(),
            DueAt::parse("2026-12-01T10:00:00Z").unwrap(),
        )
        .await
        .unwrap();
    app.complete_task(ctx, lead, task).await.unwrap();
    let missing = app
        .complete_task(ctx, lead, crm_events::ids::TaskId::generate())
        .await
        .unwrap_err();
    assert!(matches!(missing, AppError::NotFound("task")));
    app.log_communication(
        ctx,
        lead,
        Channel::Text,
        Direction::Outbound,
        Summary::parse("Sent listings").unwrap(),
    )
    .await
    .unwrap();
    app.archive_lead(ctx, lead, None).await.unwrap();
    assert!(matches!(
        app.lead(ctx, lead).await.unwrap_err(),
        AppError::NotFound("lead")
    ));

    let types: Vec<String> = events_after(&app, before)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "LeadCreated",
            "LeadNoteAdded",
            "LeadTaskCreated",
            "LeadTaskCompleted",
            "LeadCommunicationLogged",
            "LeadArchived"
        ]
    );

    let (template, _) = app
        .create_template(
            ctx,
            TemplateKind::Email,
            TemplateName::parse("Intro").unwrap(),
            Some(TemplateSubject::parse("Hello").unwrap()),
            TemplateBody::parse("Hi {name}").unwrap(),
        )
        .await
        .unwrap();
    let edit = TemplateEdit {
        body: Some(TemplateBody::parse("Hello {name}").unwrap()),
        ..TemplateEdit::default()
    };
    app.update_template(ctx, template, edit, None)
        .await
        .unwrap();
    let settings = app.settings(ctx).await.unwrap();
    assert_eq!(settings.state.templates[&template].body, "Hello {name}");
    assert_eq!(settings.version, 2);
    app.delete_template(ctx, template, None).await.unwrap();
    assert!(matches!(
        app.delete_template(ctx, template, None).await.unwrap_err(),
        AppError::NotFound("template")
    ));
}

async fn a_change_that_changes_nothing_appends_nothing_and_a_stale_version_conflicts(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Dana").await;
    let before = head(&app).await;
    let same = LeadEdit {
        name: Some(PersonName::parse("Dana").unwrap()),
        stage: Some(Stage::New),
        ..LeadEdit::default()
    };
    let written = app
        .edit_lead(&s.agent1.ctx, lead, same, Some(1))
        .await
        .unwrap();
    assert_eq!((written.version, written.position), (1, before));
    app.change_settings(
        &s.agent1.ctx,
        settings_change(json!({"timezone": "UTC"})),
        None,
    )
    .await
    .unwrap();
    assert_eq!(head(&app).await, before);

    let stage = LeadEdit {
        stage: Some(Stage::Nurture),
        ..LeadEdit::default()
    };
    let written = app
        .edit_lead(&s.agent1.ctx, lead, stage.clone(), Some(1))
        .await
        .unwrap();
    assert_eq!(written.version, 2);
    let stale = app
        .edit_lead(&s.agent1.ctx, lead, stage, Some(1))
        .await
        .unwrap_err();
    assert!(matches!(stale, AppError::Conflict(_)), "{stale:?}");
    assert_eq!(head(&app).await, written.position);
}

async fn users_are_managed_by_role_and_emails_are_unique(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let before = head(&app).await;
    let create = |ctx, email: &str, role| {
        let app = app.clone();
        let email = email.to_owned();
        async move {
            app.create_user(
                ctx,
                PersonName::parse("New").unwrap(),
                Email::parse(&email).unwrap(),
                role,
                Password::parse(PASSWORD).unwrap(),
            )
            .await
        }
    };
    let taken = create(&s.admin.ctx, "AGENT1@demo.example", Role::Agent)
        .await
        .unwrap_err();
    assert!(matches!(taken, AppError::Conflict(_)), "{taken:?}");
    assert!(matches!(
        create(&s.admin.ctx, "a3@demo.example", Role::Admin)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert!(matches!(
        create(&s.owner.ctx, "o2@demo.example", Role::Owner)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert!(matches!(
        create(&s.agent1.ctx, "a4@demo.example", Role::Agent)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert!(matches!(
        create(&s.auditor.ctx, "a5@demo.example", Role::Agent)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert_eq!(head(&app).await, before);

    let (agent3, _) = create(&s.admin.ctx, "Agent3@Demo.example", Role::Agent)
        .await
        .unwrap();
    assert_eq!(
        (agent3.email.as_str(), agent3.role, agent3.active),
        ("agent3@demo.example", Role::Agent, true)
    );
    login(&app, "agent3@demo.example").await;
    let wrong = app
        .login(
            "agent3@demo.example",
            "wrong-password",
            crm_events::ids::CorrelationId::generate(),
        )
        .await;
    assert!(matches!(wrong.unwrap_err(), AppError::Unauthenticated(_)));
    let unknown = app
        .login(
            "nobody@demo.example",
            PASSWORD,
            crm_events::ids::CorrelationId::generate(),
        )
        .await;
    assert!(matches!(unknown.unwrap_err(), AppError::Unauthenticated(_)));

    let (updated, written) = app
        .update_user(&s.admin.ctx, agent3.id, None, Some(false), None)
        .await
        .unwrap();
    assert!(!updated.active);
    let stale = app
        .update_user(
            &s.admin.ctx,
            agent3.id,
            Some(Role::Auditor),
            None,
            Some(written.version - 1),
        )
        .await;
    assert!(matches!(stale.unwrap_err(), AppError::Conflict(_)));
    let deactivated = app
        .login(
            "agent3@demo.example",
            PASSWORD,
            crm_events::ids::CorrelationId::generate(),
        )
        .await;
    assert!(matches!(
        deactivated.unwrap_err(),
        AppError::Unauthenticated(_)
    ));
    assert!(matches!(
        app.update_user(&s.admin.ctx, s.owner.id, None, Some(false), None)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert!(matches!(
        app.update_user(&s.admin.ctx, s.admin.id, Some(Role::Agent), None, None)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
}

async fn no_password_hash_or_token_enters_the_log(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    app.change_password(
        &s.agent1.ctx,
        PASSWORD,
        Password::parse("a-brand-new-secret").unwrap(),
    )
    .await
    .unwrap();
    let wrong = app
        .change_password(
            &s.agent1.ctx,
            "not-it-at-all",
            Password::parse("another-secret").unwrap(),
        )
        .await;
    assert!(
        matches!(wrong.unwrap_err(), AppError::Validation(ref e) if e[0].field == "current_password")
    );
    app.login(
        "agent1@demo.example",
        "a-brand-new-secret",
        crm_events::ids::CorrelationId::generate(),
    )
    .await
    .unwrap();

    let log = events_after(&app, Position::START).await;
    assert!(log.iter().any(|e| e.event_type == "UserPasswordChanged"));
    for event in &log {
        for secret in [
            PASSWORD,
            "a-brand-new-secret",
            "$argon2",
            s.agent1.token.as_str(),
            s.admin.token.as_str(),
        ] {
            assert!(
                !event.payload.contains(secret),
                "{} carries a secret",
                event.event_type
            );
        }
    }
}

async fn nothing_crosses_sites(db: &TestDatabase) {
    let app = app(db).await;
    let a = site(&app, "Demo Realty", "demo.example").await;
    let b = site(&app, "Rival Homes", "rival.example").await;
    let lead = lead_of(&app, &a.agent1.ctx, "Dana").await;
    let before = head(&app).await;

    assert!(matches!(
        app.lead(&b.owner.ctx, lead).await.unwrap_err(),
        AppError::NotFound("lead")
    ));
    assert!(matches!(
        app.edit_lead(&b.admin.ctx, lead, LeadEdit::default(), None)
            .await
            .unwrap_err(),
        AppError::NotFound("lead")
    ));
    assert!(matches!(
        app.assign_lead(&b.admin.ctx, lead, b.agent1.id, None)
            .await
            .unwrap_err(),
        AppError::NotFound("lead")
    ));
    assert!(matches!(
        app.assign_lead(&a.admin.ctx, lead, b.agent1.id, None)
            .await
            .unwrap_err(),
        AppError::Validation(_)
    ));
    assert!(matches!(
        app.user(&b.admin.ctx, a.agent1.id).await.unwrap_err(),
        AppError::NotFound("user")
    ));
    assert!(matches!(
        app.update_user(&b.owner.ctx, a.agent1.id, None, Some(false), None)
            .await
            .unwrap_err(),
        AppError::NotFound("user")
    ));
    let mut foreign = NewLead {
        assigned_agent_id: Some(a.agent1.id),
        ..new_lead("Eli")
    };
    assert!(matches!(
        app.create_lead(&b.admin.ctx, foreign.clone())
            .await
            .unwrap_err(),
        AppError::Validation(_)
    ));
    foreign.assigned_agent_id = Some(UserId::generate());
    assert!(matches!(
        app.create_lead(&b.admin.ctx, foreign).await.unwrap_err(),
        AppError::Validation(_)
    ));
    assert_eq!(head(&app).await, before);

    // Every event is of one of the two sites, and whoever acted belongs to that site.
    let people = |s: &Site| {
        [
            &s.owner, &s.admin, &s.admin2, &s.agent1, &s.agent2, &s.auditor,
        ]
        .map(|p| p.id)
    };
    for event in events_after(&app, Position::START).await {
        let site = if event.site_id == a.id { &a } else { &b };
        assert!([a.id, b.id].contains(&event.site_id));
        assert!(
            event.actor_id == UserId::SYSTEM || people(site).contains(&event.actor_id),
            "{} at {} was made by someone of another site",
            event.event_type,
            event.position
        );
        assert!(event.subject_id == UserId::SYSTEM || people(site).contains(&event.subject_id));
    }
    assert!(app.store().verify(Some(a.id)).await.unwrap().ok);
    assert!(app.store().verify(Some(b.id)).await.unwrap().ok);
}

async fn a_retried_command_with_the_same_idempotency_key_lands_once(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let keyed = |key: &str| {
        s.agent1.ctx.clone().for_request(
            crm_events::ids::CorrelationId::generate(),
            Some(key.to_owned()),
        )
    };
    let (lead, first) = app
        .create_lead(&keyed("create-1"), new_lead("Dana"))
        .await
        .unwrap();
    let (again, retry) = app
        .create_lead(&keyed("create-1"), new_lead("Dana"))
        .await
        .unwrap();
    assert_eq!(
        (again, retry.position),
        (lead, first.position),
        "the same lead, nothing new"
    );
    let (note, noted) = app
        .add_note(
            &keyed("note-1"),
            lead,
            NoteBody::parse("Call after 5").unwrap(),
        )
        .await
        .unwrap();
    let (same_note, renoted) = app
        .add_note(
            &keyed("note-1"),
            lead,
            NoteBody::parse("Call after 5").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((same_note, renoted.position), (note, noted.position));
    assert_eq!(head(&app).await, noted.position);
    let reused = app
        .add_note(
            &keyed("note-1"),
            lead,
            NoteBody::parse("Something else").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(reused, AppError::Conflict(_)), "{reused:?}");
    // Without a key, the same command is a new one.
    let (other, _) = app
        .create_lead(&s.agent1.ctx, new_lead("Dana"))
        .await
        .unwrap();
    assert_ne!(other, lead);
}

/// Commands decide first on the lead as their process last saw it: whatever another
/// process did in between must still be seen (a stale copy is caught by the version
/// the append expects, and the command is decided again on fresh state).
async fn a_copy_of_a_lead_kept_by_one_process_never_decides_after_another_changed_it(
    db: &TestDatabase,
) {
    let one = app(db).await;
    let other = app(db).await;
    let s = site(&one, "Demo Realty", "demo.example").await;
    let lead = lead_of(&one, &s.agent1.ctx, "Dana").await;
    let name = |text: &str| LeadEdit {
        name: Some(PersonName::parse(text).unwrap()),
        ..LeadEdit::default()
    };
    one.edit_lead(&s.agent1.ctx, lead, name("Dana A"), None)
        .await
        .unwrap();

    // Reassigned elsewhere: the agent's process still holds the old assignment.
    other
        .assign_lead(&s.admin.ctx, lead, s.agent2.id, None)
        .await
        .unwrap();
    let before = head(&one).await;
    let refused = one
        .edit_lead(&s.agent1.ctx, lead, name("Dana X"), None)
        .await
        .unwrap_err();
    assert!(matches!(refused, AppError::NotFound(_)), "{refused:?}");
    assert_eq!(head(&one).await, before);

    // Given back and renamed elsewhere: an If-Match of the current version is
    // accepted, and each change's "before" is what the other process wrote.
    other
        .assign_lead(&s.admin.ctx, lead, s.agent1.id, None)
        .await
        .unwrap();
    let renamed = other
        .edit_lead(&s.admin.ctx, lead, name("Dana B"), None)
        .await
        .unwrap();
    let written = one
        .edit_lead(&s.agent1.ctx, lead, name("Dana C"), Some(renamed.version))
        .await
        .unwrap();
    assert_eq!(written.version, renamed.version + 1);
    let appended = events_after(&one, renamed.position).await;
    assert_eq!(appended.len(), 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&appended[0].payload).unwrap()["changes"][0]
            ["before"],
        json!("Dana B")
    );
    let stale = one
        .edit_lead(&s.agent1.ctx, lead, name("Dana D"), Some(renamed.version))
        .await
        .unwrap_err();
    assert!(matches!(stale, AppError::Conflict(_)), "{stale:?}");

    // A change that would change nothing on the kept copy: `one` still holds the
    // lead as agent1's, but it was handed to agent2 elsewhere. Handing it to agent1
    // must append the reassignment, not answer "nothing to do".
    other
        .assign_lead(&s.admin.ctx, lead, s.agent2.id, None)
        .await
        .unwrap();
    let before = head(&one).await;
    let back = one
        .assign_lead(&s.admin.ctx, lead, s.agent1.id, None)
        .await
        .unwrap();
    let appended = events_after(&one, before).await;
    assert_eq!(appended.len(), 1, "the reassignment was appended");
    assert_eq!(appended[0].event_type, "LeadReassigned");
    assert_eq!(back.position, appended[0].position);
    one.edit_lead(&s.agent1.ctx, lead, name("Dana E"), None)
        .await
        .unwrap();
}

/// The writer's fold keeps the lead rows it wrote, so an append need not read them
/// back; whatever another process or a rebuild wrote in between must still be what
/// the next fold starts from. (A lead's tags are written to the tag index by
/// difference from the row: folding on a stale row would leave a removed tag
/// there, and the lead would still be found by it.)
async fn an_append_folds_the_lead_row_as_stored_after_another_process_or_a_rebuild_wrote_it(
    db: &TestDatabase,
) {
    let one = app(db).await;
    let other = app(db).await;
    let s = site(&one, "Demo Realty", "demo.example").await;
    let lead = lead_of(&one, &s.agent1.ctx, "Dana").await;
    let ctx = &s.agent1.ctx;
    let tags = |tags: &[&str]| LeadEdit {
        tags: Some(crm::domain::values::Tags::parse(tags).unwrap()),
        ..LeadEdit::default()
    };
    // The leads of agent1 found by `tag`, as `app` reads them.
    let found_by = |app: &crm::app::App, tag: &str| {
        let (app, ctx, tag) = (app.clone(), ctx.clone(), tag.to_owned());
        async move {
            let query = crm::app::reads::LeadQuery {
                tag: Some(tag),
                ..crm::app::reads::LeadQuery::default()
            };
            let page = app.leads(&ctx, query, None, 50).await.unwrap();
            page.items.len()
        }
    };
    let sorted_tags = |app: &crm::app::App| {
        let (app, ctx) = (app.clone(), ctx.clone());
        async move {
            let mut tags = app.lead_detail(&ctx, lead).await.unwrap().lead.tags;
            tags.sort();
            tags
        }
    };

    // Appends in a row from one process: the later ones fold on the kept row.
    for tag_set in [&["a"][..], &["a", "x"][..]] {
        one.edit_lead(ctx, lead, tags(tag_set), None).await.unwrap();
    }
    other
        .edit_lead(ctx, lead, tags(&["a", "x", "b"]), None)
        .await
        .unwrap();
    one.edit_lead(ctx, lead, tags(&["a"]), None).await.unwrap();
    assert_eq!(sorted_tags(&one).await, ["a"]);
    assert_eq!(found_by(&one, "b").await, 0, "a tag removed is not found");
    assert_eq!(found_by(&one, "a").await, 1);

    // A rebuild (another connection of the same process) writes every row again.
    let names = one.projector().names();
    one.projector().rebuild(&names, &|_| {}).await.unwrap();
    one.edit_lead(ctx, lead, tags(&["a", "y"]), None)
        .await
        .unwrap();
    other
        .edit_lead(ctx, lead, tags(&["a", "y", "z"]), None)
        .await
        .unwrap();
    one.edit_lead(ctx, lead, tags(&["y"]), None).await.unwrap();
    assert_eq!(sorted_tags(&one).await, ["y"]);
    assert_eq!(sorted_tags(&other).await, ["y"]);
    for gone in ["a", "b", "x", "z"] {
        assert_eq!(found_by(&other, gone).await, 0, "{gone} was removed");
    }

    // And what the appends folded is what a fold from scratch gives.
    let folded = one.lead_detail(ctx, lead).await.unwrap().lead;
    one.projector().rebuild(&names, &|_| {}).await.unwrap();
    let rebuilt = one.lead_detail(ctx, lead).await.unwrap().lead;
    assert_eq!(
        serde_json::to_value(&folded).unwrap(),
        serde_json::to_value(&rebuilt).unwrap()
    );
}
