//! Rules of the lead commands and of the reads that mutation testing found
//! unguarded, written from the contract: an agent reads only the "Log in as
//! user" sessions about their own account; the users list offers "Log in as
//! user" by the site's own rules; a new lead is the subject's unless an owner or
//! admin names another active assignee of the site.

mod support;

use crm::app::AppError;
use crm::domain::site::SiteSettingsEdit;
use crm_events::backend_tests;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::ids::ImpersonationId;
use crm_events::testing::TestDatabase;
use support::*;

backend_tests!(
    an_agent_reads_only_the_sessions_about_their_own_account,
    the_users_list_offers_log_in_as_user_by_the_sites_rules,
    a_new_lead_is_the_subjects_unless_an_admin_names_an_active_assignee,
);

async fn an_agent_reads_only_the_sessions_about_their_own_account(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let mut started = Vec::new();
    for (admin, agent) in [(&s.admin, &s.agent1), (&s.admin2, &s.agent2)] {
        let (acting, _) = app
            .start_impersonation(
                &admin.ctx,
                agent.id,
                reason("checking the pipeline"),
                ImpersonationMode::Edit,
            )
            .await
            .unwrap();
        started.push(acting.impersonation().unwrap());
        app.return_to_admin(&acting).await.unwrap();
    }
    for (agent, mine, theirs) in [
        (&s.agent1, started[0], started[1]),
        (&s.agent2, started[1], started[0]),
    ] {
        let ctx = again(&app, agent).await;
        let listed: Vec<ImpersonationId> = app
            .impersonations_of_me(&ctx, None, 50)
            .await
            .unwrap()
            .items
            .iter()
            .map(|v| ImpersonationId::from_uuid(v.session.id))
            .collect();
        assert_eq!(listed, [mine], "{}'s list", agent.email);
        assert!(app.audit_session(&ctx, mine).await.is_ok());
        assert!(matches!(
            app.audit_session(&ctx, theirs).await,
            Err(AppError::NotFound(_))
        ));
    }
}

async fn the_users_list_offers_log_in_as_user_by_the_sites_rules(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let offered = |enabled: bool| {
        let app = app.clone();
        let admin = s.admin.clone();
        let agent = s.agent1.id;
        async move {
            let ctx = again(&app, &admin).await;
            let listed = app.users_list(&ctx, None, 50).await.unwrap();
            let row = listed
                .items
                .into_iter()
                .find(|u| u.user.id == agent.as_uuid())
                .unwrap();
            assert_eq!(row.can_impersonate, enabled, "{row:?}");
            row.cannot_impersonate_because
        }
    };
    assert_eq!(offered(true).await, None);
    let off = SiteSettingsEdit {
        enabled: Some(false),
        ..Default::default()
    };
    app.change_site_settings(&s.owner.ctx, off, None)
        .await
        .unwrap();
    let why = offered(false).await.expect("a reason");
    assert!(why.contains("switched off"), "{why}");
}

async fn a_new_lead_is_the_subjects_unless_an_admin_names_an_active_assignee(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let other = site(&app, "Rival Homes", "rival.example").await;
    let lead_for = |assignee: Option<crm_events::ids::UserId>| {
        let mut lead = new_lead("Dana Novak");
        lead.assigned_agent_id = assignee;
        lead
    };

    // An agent's new lead is theirs, named or not; naming anyone else is refused.
    for named in [None, Some(s.agent1.id)] {
        let (id, _) = app
            .create_lead(&s.agent1.ctx, lead_for(named))
            .await
            .unwrap();
        let lead = app.lead_row(&s.agent1.ctx, id).await.unwrap();
        assert_eq!(lead.assigned_agent_id, Some(s.agent1.id.as_uuid()));
    }
    let before_refusal = head(&app).await;
    assert!(matches!(
        app.create_lead(&s.agent1.ctx, lead_for(Some(s.agent2.id)))
            .await,
        Err(AppError::Forbidden(_))
    ));
    assert_eq!(head(&app).await, before_refusal, "nothing appended");

    // An admin names an agent of the site; never an auditor, a deactivated
    // user, someone of another site or nobody.
    let (id, _) = app
        .create_lead(&s.admin.ctx, lead_for(Some(s.agent2.id)))
        .await
        .unwrap();
    let lead = app.lead_row(&s.agent2.ctx, id).await.unwrap();
    assert_eq!(lead.assigned_agent_id, Some(s.agent2.id.as_uuid()));
    app.update_user(&s.admin.ctx, s.agent2.id, None, Some(false), None)
        .await
        .unwrap();
    let head_before_refusals = head(&app).await;
    for named in [
        s.auditor.id,
        s.agent2.id,
        other.agent1.id,
        crm_events::ids::UserId::generate(),
    ] {
        let refused = app.create_lead(&s.admin.ctx, lead_for(Some(named))).await;
        assert!(
            matches!(refused, Err(AppError::Validation(_))),
            "{refused:?}"
        );
    }
    assert_eq!(head(&app).await, head_before_refusals, "nothing appended");
}
