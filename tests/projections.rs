//! The read side on both backends: the seed scenario in the audit trail, the lead
//! manager, settings, users list and notifications; indexes behind the main queries.

mod support;

use crm::domain::lead::LeadEdit;
use crm::domain::settings::{SettingsChange, TemplateEdit};
use crm::domain::site::SiteSettingsEdit;
use crm::domain::values::{Email, NoteBody, Phone, TemplateBody, TemplateName, TemplateSubject};
use crm_events::backend_tests;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::catalog::values::{Stage, TemplateKind};
use crm_events::ids::{LeadId, SiteId};
use crm_events::testing::TestDatabase;
use crm_projections::audit_trail::{self, ChangeFilter, SessionFilter};
use crm_projections::lead_manager::{self, LeadFilter, LeadSort, Owner};
use crm_projections::{notifications, settings, users};
use serde_json::json;
use support::*;

backend_tests!(
    the_seed_scenario_lists_exactly_the_admins_changes_with_before_and_after,
    the_lead_manager_filters_sorts_counts_and_pages,
    agents_are_told_when_the_site_says_so,
    the_main_queries_are_served_by_indexes,
    the_users_list_says_on_which_rows_log_in_as_user_is_allowed,
    reads_follow_the_same_policy_as_commands,
    the_projections_follow_appends_made_by_another_process,
);

async fn the_seed_scenario_lists_exactly_the_admins_changes_with_before_and_after(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let agent = &s.agent1.ctx;
    let mut lead = new_lead("Dana Whitfield");
    lead.phone = Some(Phone::parse("+1 555 0100").unwrap());
    let (lead, _) = app.create_lead(agent, lead).await.unwrap();
    let (template, _) = app
        .create_template(
            agent,
            TemplateKind::Email,
            TemplateName::parse("Follow-up").unwrap(),
            Some(TemplateSubject::parse("Checking in").unwrap()),
            TemplateBody::parse("Hi {name}, still looking?").unwrap(),
        )
        .await
        .unwrap();

    // The admin logs in as the agent, changes two fields of a lead, adds a note,
    // edits a template and a setting, and returns to admin.
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Fix Dana's record"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    let session = acting.impersonation().unwrap();
    let edit = LeadEdit {
        phone: Some(Some(Phone::parse("+1 555 0199").unwrap())),
        email: Some(Some(Email::parse("dana.w@example.com").unwrap())),
        ..LeadEdit::default()
    };
    app.edit_lead(&acting, lead, edit, None).await.unwrap();
    app.add_note(
        &acting,
        lead,
        NoteBody::parse("Prefers a call after 5pm").unwrap(),
    )
    .await
    .unwrap();
    let body = TemplateEdit {
        body: Some(TemplateBody::parse("Hi {name}, shall we meet?").unwrap()),
        ..TemplateEdit::default()
    };
    app.update_template(&acting, template, body, None)
        .await
        .unwrap();
    let timezone =
        SettingsChange::parse(json!({"timezone": "America/Denver"}).as_object().unwrap()).unwrap();
    app.change_settings(&acting, timezone, None).await.unwrap();
    app.return_to_admin(&acting).await.unwrap();

    let dbh = app.settled(&app.projector().names()).await.unwrap();
    let listed = audit_trail::session(dbh, s.id, session)
        .await
        .unwrap()
        .expect("the session is listed");
    assert_eq!(
        (listed.admin_id, listed.subject_id),
        (s.admin.id.as_uuid(), s.agent1.id.as_uuid())
    );
    assert_eq!(listed.reason.as_deref(), Some("Fix Dana's record"));
    assert_eq!(listed.end_reason.as_deref(), Some("returned"));
    assert!(listed.ended_at.is_some_and(|end| end >= listed.started_at));
    assert_eq!(listed.change_count, 5);

    let changes = audit_trail::session_changes(dbh, session).await.unwrap();
    let seen: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.entity_type.as_str(),
                c.field.as_str(),
                c.before.clone(),
                c.after.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "lead",
                "email",
                json!("lead@example.com"),
                json!("dana.w@example.com")
            ),
            ("lead", "phone", json!("+1 555 0100"), json!("+1 555 0199")),
            ("lead", "note", json!(null), changes[2].after.clone()),
            (
                "template",
                "body",
                json!("Hi {name}, still looking?"),
                json!("Hi {name}, shall we meet?")
            ),
            (
                "settings",
                "timezone",
                json!("UTC"),
                json!("America/Denver")
            ),
        ]
    );
    assert_eq!(changes[2].after["body"], "Prefers a call after 5pm");
    for change in &changes {
        assert_eq!(change.actor_id, s.admin.id.as_uuid());
        assert_eq!(change.subject_id, s.agent1.id.as_uuid());
        assert_eq!(change.impersonation_id, Some(session.as_uuid()));
    }
    assert_eq!(changes[0].entity_id, lead.as_uuid());
    assert_eq!(changes[3].entity_id, template.as_uuid());

    // The same changes, site-wide, filtered as compliance would.
    let impersonated = ChangeFilter {
        impersonated: Some(true),
        order: crm_projections::query::Order::OldestFirst,
        ..ChangeFilter::default()
    };
    let page = audit_trail::changes(dbh, s.id, &impersonated, None, 50)
        .await
        .unwrap();
    assert_eq!(page.items, changes);
    let by_admin = ChangeFilter {
        actor_id: Some(s.admin.id),
        ..ChangeFilter::default()
    };
    assert_eq!(
        audit_trail::changes(dbh, s.id, &by_admin, None, 50)
            .await
            .unwrap()
            .items
            .len(),
        5,
        "the admin changed nothing else"
    );
    let the_lead = ChangeFilter {
        entity_type: Some("lead".into()),
        entity_id: Some(lead.as_uuid()),
        ..ChangeFilter::default()
    };
    let lead_history = audit_trail::changes(dbh, s.id, &the_lead, None, 50)
        .await
        .unwrap()
        .items;
    assert_eq!(
        lead_history
            .iter()
            .filter(|c| c.impersonation_id.is_none())
            .count(),
        6,
        "created by the agent"
    );
    assert_eq!(
        lead_history
            .iter()
            .filter(|c| c.impersonation_id.is_some())
            .count(),
        3
    );

    // The agent sees the new values.
    let shown = lead_manager::get(dbh, lead).await.unwrap().unwrap();
    assert_eq!(
        (shown.phone.as_deref(), shown.email.as_deref()),
        (Some("+1 555 0199"), Some("dana.w@example.com"))
    );
    let mine = lead_manager::list(
        dbh,
        &LeadFilter::of(Owner::AssignedTo(s.agent1.id)),
        LeadSort::default(),
        None,
        50,
    )
    .await
    .unwrap();
    assert_eq!(mine.items, std::slice::from_ref(&shown));
    let notes = lead_manager::notes(dbh, lead).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        notes[0].author_id,
        s.agent1.id.as_uuid(),
        "written as the agent"
    );
    let (values, _) = settings::get(dbh, s.agent1.id).await.unwrap();
    assert_eq!(values["timezone"], "America/Denver");
    let templates = settings::templates(dbh, s.agent1.id).await.unwrap();
    assert_eq!(
        (templates[0].body.as_str(), templates[0].version),
        ("Hi {name}, shall we meet?", 2)
    );

    // "Who logged in as me".
    let as_me = SessionFilter {
        subject_id: Some(s.agent1.id),
        ..SessionFilter::default()
    };
    let who = audit_trail::sessions(dbh, s.id, &as_me, None, 50)
        .await
        .unwrap();
    assert_eq!(who.items, [listed]);
    let other = SessionFilter {
        subject_id: Some(s.agent2.id),
        ..SessionFilter::default()
    };
    assert!(audit_trail::sessions(dbh, s.id, &other, None, 50)
        .await
        .unwrap()
        .items
        .is_empty());

    // The users list knows the agent, with its version as the ETag.
    let list = users::list(dbh, s.id, None, 50).await.unwrap();
    assert_eq!(list.items.len(), 6);
    let row = users::get(dbh, s.id, s.agent1.id).await.unwrap().unwrap();
    assert_eq!(
        row.version as u64,
        app.user(&s.owner.ctx, s.agent1.id).await.unwrap().version
    );
}

async fn the_lead_manager_filters_sorts_counts_and_pages(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let agent = &s.agent1.ctx;
    let mut ids: Vec<LeadId> = Vec::new();
    for (i, name) in [
        "Zoe Park",
        "adam_Smith",
        "Mia 100%",
        "Bob Stone",
        "Eve Adams",
    ]
    .iter()
    .enumerate()
    {
        let mut lead = new_lead(name);
        if i % 2 == 0 {
            lead.tags = crm::domain::values::Tags::parse(&["vip"]).unwrap();
        }
        ids.push(app.create_lead(agent, lead).await.unwrap().0);
    }
    app.create_lead(&s.agent2.ctx, new_lead("Not Mine"))
        .await
        .unwrap();
    app.edit_lead(
        agent,
        ids[1],
        LeadEdit {
            stage: Some(Stage::Contacted),
            ..LeadEdit::default()
        },
        None,
    )
    .await
    .unwrap();
    app.create_task(
        agent,
        ids[3],
        crm::domain::values::TaskTitle::parse("Call").unwrap(),
        crm::domain::values::DueAt::parse("2026-12-01T09:00:00Z").unwrap(),
    )
    .await
    .unwrap();
    app.create_task(
        agent,
        ids[4],
        crm::domain::values::TaskTitle::parse("Call").unwrap(),
        crm::domain::values::DueAt::parse("2026-11-30T09:00:00Z").unwrap(),
    )
    .await
    .unwrap();
    app.archive_lead(agent, ids[2], None).await.unwrap();

    let dbh = app.settled(&app.projector().names()).await.unwrap();
    let mine = LeadFilter::of(Owner::AssignedTo(s.agent1.id));
    let names = |page: &crm_projections::Page<lead_manager::Lead>| {
        page.items
            .iter()
            .map(|l| l.name.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };

    let by_name = lead_manager::list(dbh, &mine, LeadSort::Name, None, 50)
        .await
        .unwrap();
    assert_eq!(
        names(&by_name),
        ["adam_Smith", "Bob Stone", "Eve Adams", "Zoe Park"],
        "archived leads leave the list"
    );
    let by_due = lead_manager::list(dbh, &mine, LeadSort::NextTaskDueAt, None, 50)
        .await
        .unwrap();
    assert_eq!(
        names(&by_due)[..2],
        ["Eve Adams", "Bob Stone"],
        "soonest task first, none last"
    );
    let newest = lead_manager::list(dbh, &mine, LeadSort::UpdatedAtDesc, None, 50)
        .await
        .unwrap();
    assert_eq!(names(&newest)[0], "Eve Adams");

    // Pages of two, in both directions, cover everything once.
    for sort in [
        LeadSort::Name,
        LeadSort::UpdatedAt,
        LeadSort::UpdatedAtDesc,
        LeadSort::NextTaskDueAt,
    ] {
        let mut cursor = None;
        let mut paged = Vec::new();
        loop {
            let page = lead_manager::list(dbh, &mine, sort, cursor.as_deref(), 2)
                .await
                .unwrap();
            paged.extend(names(&page));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let all = lead_manager::list(dbh, &mine, sort, None, 50)
            .await
            .unwrap();
        assert_eq!(paged, names(&all), "{sort:?}");
    }
    assert!(matches!(
        lead_manager::list(dbh, &mine, LeadSort::Name, Some("zz"), 2).await,
        Err(crm_projections::QueryError::BadCursor)
    ));

    let vip = LeadFilter {
        tag: Some("vip".into()),
        ..mine.clone()
    };
    assert_eq!(
        names(
            &lead_manager::list(dbh, &vip, LeadSort::Name, None, 50)
                .await
                .unwrap()
        ),
        ["Eve Adams", "Zoe Park"]
    );
    let contacted = LeadFilter {
        stage: Some(Stage::Contacted),
        ..mine.clone()
    };
    assert_eq!(
        names(
            &lead_manager::list(dbh, &contacted, LeadSort::Name, None, 50)
                .await
                .unwrap()
        ),
        ["adam_Smith"]
    );
    for (q, expected) in [
        ("ADAM", vec!["adam_Smith", "Eve Adams"]),
        ("_", vec!["adam_Smith"]),
        ("%", vec![]),
    ] {
        let text = LeadFilter {
            q: Some(q.into()),
            ..mine.clone()
        };
        assert_eq!(
            names(
                &lead_manager::list(dbh, &text, LeadSort::Name, None, 50)
                    .await
                    .unwrap()
            ),
            expected,
            "q={q}"
        );
    }
    let counts = lead_manager::counts_by_stage(dbh, &mine).await.unwrap();
    assert_eq!(
        (counts["new"], counts["contacted"], counts["lost"]),
        (3, 1, 0)
    );
    let site = LeadFilter::of(Owner::Site(s.id));
    assert_eq!(
        lead_manager::list(dbh, &site, LeadSort::Name, None, 50)
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    let elsewhere = LeadFilter::of(Owner::Site(SiteId::generate()));
    assert!(
        lead_manager::list(dbh, &elsewhere, LeadSort::Name, None, 50)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn agents_are_told_when_the_site_says_so(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Quiet fix"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    app.return_to_admin(&acting).await.unwrap();
    assert!(
        notifications::list(
            app.settled(&app.projector().names()).await.unwrap(),
            s.agent1.id,
            None,
            50
        )
        .await
        .unwrap()
        .items
        .is_empty(),
        "off by default"
    );

    app.change_site_settings(
        &s.owner.ctx,
        SiteSettingsEdit {
            notify_subject: Some(true),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Update the signature"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap();
    let told = notifications::list(
        app.settled(&app.projector().names()).await.unwrap(),
        s.agent1.id,
        None,
        50,
    )
    .await
    .unwrap()
    .items;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].text, "admin logged in as you: Update the signature");
    assert_eq!(told[0].kind, "impersonation_started");
    assert!(notifications::list(
        app.settled(&app.projector().names()).await.unwrap(),
        s.admin.id,
        None,
        50
    )
    .await
    .unwrap()
    .items
    .is_empty());
}

async fn the_main_queries_are_served_by_indexes(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    lead_of(&app, &s.agent1.ctx, "Dana").await;
    let dbh = app.settled(&app.projector().names()).await.unwrap();
    let mine = LeadFilter::of(Owner::AssignedTo(s.agent1.id));
    let mut queries = Vec::new();
    for sort in [
        LeadSort::Name,
        LeadSort::UpdatedAt,
        LeadSort::UpdatedAtDesc,
        LeadSort::NextTaskDueAt,
    ] {
        queries.push((
            format!("leads {sort:?}"),
            lead_manager::list_query(&mine, sort, None, 50).unwrap(),
        ));
        let site = LeadFilter::of(Owner::Site(s.id));
        queries.push((
            format!("site leads {sort:?}"),
            lead_manager::list_query(&site, sort, None, 50).unwrap(),
        ));
        for owner in [&mine, &site] {
            let filter = LeadFilter {
                stage: Some(Stage::Closed),
                ..owner.clone()
            };
            let query = lead_manager::list_query(&filter, sort, None, 50).unwrap();
            let plan = query.explain(dbh).await.unwrap().join("\n");
            // Read through an index that starts with the stage: a rare stage does
            // not mean skipping the owner's whole list.
            assert!(
                plan.contains("_stage_"),
                "leads of one stage {sort:?} skip through other stages:\n{plan}"
            );
            queries.push((format!("leads of one stage {sort:?}"), query));
        }
    }
    let staged = LeadFilter {
        stage: Some(Stage::New),
        tag: Some("vip".into()),
        ..mine.clone()
    };
    queries.push((
        "leads by stage and tag".into(),
        lead_manager::list_query(&staged, LeadSort::Name, None, 50).unwrap(),
    ));
    let filters = [
        ChangeFilter::default(),
        ChangeFilter {
            actor_id: Some(s.admin.id),
            ..ChangeFilter::default()
        },
        ChangeFilter {
            subject_id: Some(s.agent1.id),
            ..ChangeFilter::default()
        },
        ChangeFilter {
            entity_type: Some("lead".into()),
            entity_id: Some(uuid::Uuid::now_v7()),
            ..ChangeFilter::default()
        },
        ChangeFilter {
            impersonated: Some(true),
            ..ChangeFilter::default()
        },
    ];
    for filter in &filters {
        let query = audit_trail::changes_query(s.id, filter, None, 50).unwrap();
        let plan = query.explain(dbh).await.unwrap().join("\n");
        // The site is a condition of the index read, not a filter on rows read in
        // order of position: a site that was quiet for a while must not pass over
        // every newer change of the other sites to find its first page.
        assert!(
            plan.contains("(site_id=?")
                || plan.contains("Index Cond: (site_id = ")
                || plan.contains("Index Cond: ((site_id = "),
            "changes {filter:?} are not read by the site:\n{plan}"
        );
        queries.push((format!("changes {filter:?}"), query));
    }
    if let crm_events::Database::Postgres(pool) = dbh {
        // Whatever the statistics make the planner prefer, no index of the changes
        // leads with the position: each begins with the site (or the session).
        let leading: Vec<(String,)> = sqlx::query_as(
            "SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x \
             JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = 'audit_changes'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(leading.len() >= 5, "{leading:?}");
        for (definition,) in leading {
            assert!(
                definition.contains("(site_id") || definition.contains("(impersonation_id"),
                "{definition}"
            );
        }
    }
    for filter in [
        SessionFilter::default(),
        SessionFilter {
            subject_id: Some(s.agent1.id),
            ..SessionFilter::default()
        },
        SessionFilter {
            admin_id: Some(s.admin.id),
            ..SessionFilter::default()
        },
    ] {
        queries.push((
            format!("sessions {filter:?}"),
            audit_trail::sessions_query(s.id, &filter, None, 50).unwrap(),
        ));
    }
    for (name, query) in queries {
        let plan = query.explain(dbh).await.unwrap().join("\n");
        let scans_a_table = plan.lines().any(|step| {
            // SQLite: "SCAN leads_view" without an index; PostgreSQL: "Seq Scan on ...".
            (step.contains("SCAN ") && !step.contains("USING") && !step.contains("SCAN CONSTANT"))
                || step.contains("Seq Scan")
        });
        assert!(!scans_a_table, "{name} scans a whole table:\n{plan}");
        assert!(
            !plan.contains("TEMP B-TREE") && !plan.contains("Sort  "),
            "{name} sorts instead of reading an index in order:\n{plan}"
        );
    }
}

async fn the_users_list_says_on_which_rows_log_in_as_user_is_allowed(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    app.update_user(&s.owner.ctx, s.agent2.id, None, Some(false), None)
        .await
        .unwrap();
    let allowed = |page: crm_projections::Page<crm::app::reads::ListedUser>| {
        page.items
            .into_iter()
            .filter(|u| u.can_impersonate)
            .map(|u| u.user.email)
            .collect::<Vec<_>>()
    };
    for caller in [&s.owner, &s.admin] {
        let page = app.users_list(&caller.ctx, None, 50).await.unwrap();
        assert_eq!(page.items.len(), 6);
        assert_eq!(
            allowed(page),
            ["agent1@demo.example"],
            "only the active agent"
        );
    }
    assert!(allowed(app.users_list(&s.auditor.ctx, None, 50).await.unwrap()).is_empty());
    let agent = app.users_list(&s.agent1.ctx, None, 50).await.unwrap_err();
    assert!(
        matches!(agent, crm::app::AppError::Forbidden(_)),
        "{agent:?}"
    );
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    assert!(matches!(
        app.users_list(&acting, None, 50).await.unwrap_err(),
        crm::app::AppError::Forbidden(_)
    ));
    let first = app.users_list(&s.owner.ctx, None, 4).await.unwrap();
    let rest = app
        .users_list(&s.owner.ctx, first.next_cursor.as_deref(), 4)
        .await
        .unwrap();
    assert_eq!(
        (first.items.len(), rest.items.len(), rest.next_cursor),
        (4, 2, None)
    );
}

async fn reads_follow_the_same_policy_as_commands(db: &TestDatabase) {
    use crm::app::reads::LeadQuery;
    use crm::app::AppError;
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let lead = lead_of(&app, &s.agent1.ctx, "Dana").await;
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    let session = acting.impersonation().unwrap();
    app.add_note(&acting, lead, NoteBody::parse("hi").unwrap())
        .await
        .unwrap();

    // The Lead Manager acts as the subject.
    assert_eq!(
        app.leads(&acting, LeadQuery::default(), None, 50)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(app.lead_detail(&acting, lead).await.unwrap().notes.len(), 1);
    assert!(matches!(
        app.lead_detail(&s.agent2.ctx, lead).await.unwrap_err(),
        AppError::NotFound(_)
    ));
    let site_scope = LeadQuery {
        whole_site: true,
        ..LeadQuery::default()
    };
    assert!(matches!(
        app.leads(&s.agent1.ctx, site_scope.clone(), None, 50)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert_eq!(
        app.leads(&s.owner.ctx, site_scope, None, 50)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        app.leads(&s.owner.ctx, LeadQuery::default(), None, 50)
            .await
            .unwrap()
            .items
            .len(),
        0,
        "the owner's own leads"
    );

    // The audit trail: never while impersonating; agents only their own sessions.
    let forbidden = app
        .audit_sessions(&acting, &SessionFilter::default(), None, 50)
        .await
        .unwrap_err();
    assert!(
        matches!(forbidden, AppError::ImpersonationForbidden(_)),
        "{forbidden:?}"
    );
    assert!(matches!(
        app.audit_session(&acting, session).await.unwrap_err(),
        AppError::ImpersonationForbidden(_)
    ));
    assert!(matches!(
        app.impersonations_of_me(&acting, None, 50)
            .await
            .unwrap_err(),
        AppError::ImpersonationForbidden(_)
    ));
    assert!(matches!(
        app.audit_sessions(&s.agent1.ctx, &SessionFilter::default(), None, 50)
            .await
            .unwrap_err(),
        AppError::Forbidden(_)
    ));
    assert_eq!(
        app.impersonations_of_me(&s.agent1.ctx, None, 50)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let kinds: Vec<&str> = app
        .audit_session(&s.agent1.ctx, session)
        .await
        .unwrap()
        .changes
        .iter()
        .map(|c| c.kind)
        .collect();
    assert_eq!(
        kinds,
        ["change", "view"],
        "what changed on my account, and what was opened"
    );
    assert!(matches!(
        app.audit_session(&s.agent2.ctx, session).await.unwrap_err(),
        AppError::NotFound(_)
    ));
    assert_eq!(
        app.audit_session(&s.auditor.ctx, session)
            .await
            .unwrap()
            .changes
            .len(),
        2,
        "the note, and the lead opened"
    );
    let other = site(&app, "Rival Homes", "rival.example").await;
    assert!(matches!(
        app.audit_session(&other.owner.ctx, session)
            .await
            .unwrap_err(),
        AppError::NotFound(_)
    ));
    assert!(app
        .audit_changes(&other.owner.ctx, &ChangeFilter::default(), None, 500)
        .await
        .unwrap()
        .items
        .iter()
        .all(|c| c.actor_id != s.admin.id.as_uuid()));

    // Settings with every key, defaults filled in.
    let (values, version) = app.settings_view(&s.agent1.ctx).await.unwrap();
    assert_eq!(
        (
            values["timezone"].clone(),
            values["notifications.task_reminder_minutes"].clone(),
            version
        ),
        (json!("UTC"), json!(30), 0)
    );
    assert_eq!(values.len(), 8);
}

async fn the_projections_follow_appends_made_by_another_process(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    // Another process, without projections of its own, appends a lead.
    let other = db.store().await;
    let lead = LeadId::generate();
    let created = crm_events::DomainEvent::from(crm_events::catalog::lead::LeadCreated {
        name: "From elsewhere".into(),
        email: None,
        phone: None,
        source: None,
        stage: Stage::New,
        tags: vec![],
        assigned_agent_id: Some(s.agent1.id),
    });
    let appended = other
        .append(
            crm_events::StreamAppend {
                site_id: s.id,
                stream: crm_events::StreamKey::new(crm_events::StreamType::Lead, lead.as_uuid()),
                expected: crm_events::ExpectedVersion::NoStream,
                events: vec![created.to_new_event()],
            },
            crm_events::Metadata::acting_as_self(s.agent1.id),
        )
        .await
        .unwrap();
    // A read settles on the log's head as the database has it: the other
    // process's append is folded before the read, with no waiting for a
    // notification (a regression fails at once instead of after a poll).
    let dbh = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.settled(&app.projector().names()),
    )
    .await
    .expect("a read settles promptly")
    .unwrap();
    assert!(
        lead_manager::get(dbh, lead).await.unwrap().is_some(),
        "the read after position {} shows the lead",
        appended.last_position
    );
    assert_eq!(app.projector().projected(), appended.last_position);
}
