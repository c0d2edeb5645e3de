//! "Log in as user" end to end through the command service, on both backends:
//! who may log in as whom, what is refused meanwhile, and how a session ends.

mod support;

use chrono::Duration;
use crm::app::AppError;
use crm::domain::site::SiteSettingsEdit;
use crm::domain::values::{NoteBody, Password};
use crm_events::backend_tests;
use crm_events::catalog::values::ImpersonationMode;
use crm_events::catalog::values::{EndReason, Role};
use crm_events::ids::CorrelationId;
use crm_events::testing::TestDatabase;
use crm_events::DomainEvent;
use support::*;

backend_tests!(
    an_admin_logs_in_as_an_agent_and_returns_to_admin,
    disallowed_callers_and_targets_are_refused_and_append_nothing,
    the_reserved_actions_are_refused_while_impersonating_and_append_nothing,
    an_expired_impersonation_acts_as_the_admin_again_and_is_recorded_as_expired,
    deactivating_or_demoting_revokes_the_impersonation,
    switching_impersonation_off_revokes_sessions_in_progress,
    signing_out_ends_the_impersonation_and_the_session,
    the_sites_maximum_duration_is_honoured,
    nothing_commits_in_a_session_past_its_expiry_before_its_end_is_recorded,
);

async fn an_admin_logs_in_as_an_agent_and_returns_to_admin(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let before = head(&app).await;

    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Fix Dana's follow-up template"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    assert_eq!(
        (acting.actor(), acting.subject()),
        (s.admin.id, s.agent1.id)
    );
    let id = acting.impersonation().expect("impersonating");

    let started = events_after(&app, before).await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].event_type, "ImpersonationStarted");
    assert_eq!(
        (started[0].actor_id, started[0].subject_id),
        (s.admin.id, s.agent1.id)
    );
    assert_eq!(started[0].impersonation_id, Some(id));
    let DomainEvent::ImpersonationStarted(payload) = DomainEvent::decode(&started[0]).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        payload.reason.as_deref(),
        Some("Fix Dana's follow-up template")
    );
    let lifetime = payload.expires_at - started[0].recorded_at;
    assert!(
        (lifetime - Duration::minutes(60)).num_seconds().abs() < 2,
        "the site's 60 minutes: {lifetime}"
    );

    // The session keeps it: the admin's next request acts as the agent...
    let next = again(&app, &s.admin).await;
    assert_eq!(
        (next.actor(), next.subject(), next.impersonation()),
        (s.admin.id, s.agent1.id, Some(id))
    );
    // ...while the agent's own session knows nothing of it.
    let agents = again(&app, &s.agent1).await;
    assert_eq!(
        (agents.actor(), agents.subject(), agents.impersonation()),
        (s.agent1.id, s.agent1.id, None)
    );
    // No nesting.
    let nested = app
        .start_impersonation(&next, s.agent2.id, reason("x"), ImpersonationMode::Edit)
        .await
        .unwrap_err();
    assert!(matches!(nested, AppError::Conflict(_)), "{nested:?}");

    let back = app.return_to_admin(&next).await.unwrap().0;
    assert_eq!(
        (back.actor(), back.subject(), back.impersonation()),
        (s.admin.id, s.admin.id, None)
    );
    let ended = events_after(&app, started[0].position).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (
            ended[0].actor_id,
            ended[0].subject_id,
            ended[0].impersonation_id
        ),
        (s.admin.id, s.agent1.id, Some(id))
    );
    let DomainEvent::ImpersonationEnded(end) = DomainEvent::decode(&ended[0]).unwrap() else {
        panic!()
    };
    assert_eq!(end.end_reason, EndReason::Returned);
    assert_eq!(again(&app, &s.admin).await.impersonation(), None);
    let not_impersonating = app.return_to_admin(&back).await.unwrap_err();
    assert!(
        matches!(not_impersonating, AppError::Conflict(_)),
        "{not_impersonating:?}"
    );

    // The owner may too.
    let owner_acting = app
        .start_impersonation(
            &s.owner.ctx,
            s.agent2.id,
            reason("Check settings"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    assert_eq!(owner_acting.subject(), s.agent2.id);
}

async fn disallowed_callers_and_targets_are_refused_and_append_nothing(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let other = site(&app, "Rival Homes", "rival.example").await;
    let mut deactivated = s.agent2.clone();
    app.update_user(&s.owner.ctx, s.agent2.id, None, Some(false), None)
        .await
        .unwrap();
    deactivated.ctx.caller.subject.active = false;
    let before = head(&app).await;

    let forbidden = [
        (&s.admin, s.owner.id, "admin -> owner"),
        (&s.admin, s.admin2.id, "admin -> admin"),
        (&s.owner, s.admin.id, "owner -> admin"),
        (&s.admin, s.auditor.id, "admin -> auditor"),
        (&s.admin, s.admin.id, "admin -> self"),
        (&s.admin, s.agent2.id, "admin -> deactivated agent"),
        (&s.admin, other.agent1.id, "admin -> agent of another site"),
        (&s.agent1, s.agent1.id, "agent -> self"),
        (&s.agent1, s.agent2.id, "agent -> agent"),
        (&s.auditor, s.agent1.id, "auditor -> agent"),
    ];
    for (caller, target, case) in forbidden {
        let error = app
            .start_impersonation(
                &caller.ctx,
                target,
                reason("reason"),
                ImpersonationMode::Edit,
            )
            .await
            .unwrap_err();
        assert!(matches!(error, AppError::Forbidden(_)), "{case}: {error:?}");
    }
    let missing = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("   "),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(missing, AppError::Validation(ref e) if e[0].field == "reason"),
        "{missing:?}"
    );
    let unknown = app
        .start_impersonation(
            &s.admin.ctx,
            crm_events::ids::UserId::generate(),
            reason("r"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap_err();
    assert!(matches!(unknown, AppError::NotFound(_)), "{unknown:?}");
    assert_eq!(head(&app).await, before, "a refused start appends nothing");

    // A site that does not require a reason accepts none.
    app.change_site_settings(
        &s.owner.ctx,
        SiteSettingsEdit {
            reason_required: Some(false),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    assert!(app
        .start_impersonation(&s.admin.ctx, s.agent1.id, None, ImpersonationMode::Edit)
        .await
        .is_ok());
}

async fn the_reserved_actions_are_refused_while_impersonating_and_append_nothing(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let acting = app
        .start_impersonation(
            &s.owner.ctx,
            s.agent1.id,
            reason("Help"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    let before = head(&app).await;

    let refused = |e: AppError| matches!(e, AppError::ImpersonationForbidden(_));
    let pw = app
        .change_password(
            &acting,
            PASSWORD,
            Password::parse("new-password-1").unwrap(),
        )
        .await;
    assert!(refused(pw.unwrap_err()));
    let settings = app
        .change_site_settings(
            &acting,
            SiteSettingsEdit {
                max_minutes: Some(10),
                ..Default::default()
            },
            None,
        )
        .await;
    assert!(refused(settings.unwrap_err()));
    let create = app
        .create_user(
            &acting,
            crm::domain::values::PersonName::parse("Eve").unwrap(),
            crm::domain::values::Email::parse("eve@demo.example").unwrap(),
            Role::Agent,
            Password::parse("whatever-123").unwrap(),
        )
        .await;
    assert!(refused(create.unwrap_err()));
    let update = app
        .update_user(&acting, s.agent2.id, Some(Role::Auditor), None, None)
        .await;
    assert!(refused(update.unwrap_err()));
    for action in [
        crm::domain::policy::Action::ReadAudit,
        crm::domain::policy::Action::ReadEvents,
        crm::domain::policy::Action::ReadOwnImpersonations,
    ] {
        let read = crm::domain::policy::authorize(&acting.caller, action).map_err(AppError::from);
        assert!(refused(read.unwrap_err()), "{action:?}");
    }
    assert_eq!(head(&app).await, before);

    // Everything the agent may do works, as the agent.
    let lead = lead_of(&app, &acting, "Dana").await;
    assert!(
        app.lead(&again(&app, &s.agent1).await, lead).await.is_ok(),
        "the lead is the agent's"
    );
}

async fn an_expired_impersonation_acts_as_the_admin_again_and_is_recorded_as_expired(
    db: &TestDatabase,
) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
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
    let id = acting.impersonation().unwrap();
    let started = events_after(&app, crm_events::Position::START)
        .await
        .pop()
        .unwrap();
    let DomainEvent::ImpersonationStarted(start) = DomainEvent::decode(&started).unwrap() else {
        panic!()
    };

    app.clock().advance(Duration::minutes(59));
    assert_eq!(again(&app, &s.admin).await.impersonation(), Some(id));
    app.clock().advance(Duration::minutes(30));
    let next = again(&app, &s.admin).await;
    assert_eq!(
        (next.subject(), next.impersonation()),
        (s.admin.id, None),
        "acts as the admin again"
    );

    let ended = events_after(&app, started.position).await;
    assert_eq!(ended.len(), 1);
    let DomainEvent::ImpersonationEnded(end) = DomainEvent::decode(&ended[0]).unwrap() else {
        panic!()
    };
    assert_eq!(end.end_reason, EndReason::Expired);
    assert_eq!(
        end.ended_at, start.expires_at,
        "recorded as expired at expires_at"
    );
    // Return to Admin still works (and records nothing more).
    let back = app.return_to_admin(&acting).await.unwrap().0;
    assert_eq!(back.subject(), s.admin.id);
    assert_eq!(events_after(&app, ended[0].position).await.len(), 0);
}

async fn deactivating_or_demoting_revokes_the_impersonation(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;

    // The subject deactivated.
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap();
    let before = head(&app).await;
    app.update_user(&s.owner.ctx, s.agent1.id, None, Some(false), None)
        .await
        .unwrap();
    let revoked = ended_reasons(&app, before).await;
    assert_eq!(revoked, [EndReason::Revoked]);
    assert_eq!(again(&app, &s.admin).await.impersonation(), None);
    let agent = app
        .authenticate(&s.agent1.token, CorrelationId::generate(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(agent, AppError::Unauthenticated(_)),
        "deactivation signs the user out at once"
    );

    // The admin demoted.
    app.start_impersonation(
        &s.admin2.ctx,
        s.agent2.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap();
    let before = head(&app).await;
    app.update_user(&s.owner.ctx, s.admin2.id, Some(Role::Agent), None, None)
        .await
        .unwrap();
    assert_eq!(ended_reasons(&app, before).await, [EndReason::Revoked]);
    let demoted = again(&app, &s.admin2).await;
    assert_eq!(
        (demoted.subject(), demoted.impersonation()),
        (s.admin2.id, None)
    );
}

async fn switching_impersonation_off_revokes_sessions_in_progress(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    app.start_impersonation(
        &s.admin.ctx,
        s.agent1.id,
        reason("Help"),
        ImpersonationMode::Edit,
    )
    .await
    .unwrap();
    let before = head(&app).await;
    app.change_site_settings(
        &s.owner.ctx,
        SiteSettingsEdit {
            enabled: Some(false),
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    // Recorded with the change, before the admin makes another request.
    assert_eq!(ended_reasons(&app, before).await, [EndReason::Revoked]);
    let next = again(&app, &s.admin).await;
    assert_eq!(next.impersonation(), None);
    assert_eq!(ended_reasons(&app, before).await, [EndReason::Revoked]);
    let error = app
        .start_impersonation(&next, s.agent1.id, reason("again"), ImpersonationMode::Edit)
        .await
        .unwrap_err();
    assert!(matches!(error, AppError::Forbidden(_)), "{error:?}");
}

async fn signing_out_ends_the_impersonation_and_the_session(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
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
    let before = head(&app).await;
    app.logout(&acting).await.unwrap();
    assert_eq!(ended_reasons(&app, before).await, [EndReason::LoggedOut]);
    let after = events_after(&app, before).await;
    let logged_out = after
        .iter()
        .find(|e| e.event_type == "UserLoggedOut")
        .unwrap();
    assert_eq!(
        (
            logged_out.actor_id,
            logged_out.subject_id,
            logged_out.impersonation_id
        ),
        (s.admin.id, s.admin.id, None)
    );
    let error = app
        .authenticate(&s.admin.token, CorrelationId::generate(), None)
        .await
        .unwrap_err();
    assert!(matches!(error, AppError::Unauthenticated(_)));
    // The agent's own session is untouched.
    assert_eq!(again(&app, &s.agent1).await.subject(), s.agent1.id);
}

async fn ended_reasons(app: &crm::app::App, after: crm_events::Position) -> Vec<EndReason> {
    events_after(app, after)
        .await
        .iter()
        .filter_map(|e| match DomainEvent::decode(e).unwrap() {
            DomainEvent::ImpersonationEnded(end) => Some(end.end_reason),
            _ => None,
        })
        .collect()
}

async fn the_sites_maximum_duration_is_honoured(db: &TestDatabase) {
    let app = app(db).await;
    let s = site(&app, "Demo Realty", "demo.example").await;
    let edit = SiteSettingsEdit {
        max_minutes: Some(15),
        ..Default::default()
    };
    app.change_site_settings(&s.owner.ctx, edit, None)
        .await
        .unwrap();
    let acting = app
        .start_impersonation(
            &s.admin.ctx,
            s.agent1.id,
            reason("Quick fix"),
            ImpersonationMode::Edit,
        )
        .await
        .unwrap()
        .0;
    app.clock().advance(Duration::minutes(14));
    assert_eq!(
        again(&app, &s.admin).await.impersonation(),
        acting.impersonation()
    );
    app.clock().advance(Duration::minutes(2));
    let before = head(&app).await;
    assert_eq!(again(&app, &s.admin).await.impersonation(), None);
    assert_eq!(ended_reasons(&app, before).await, [EndReason::Expired]);
}

/// A request authenticated just before the session expired, whose append commits
/// just after, before anyone has recorded the end: neither its write nor its view of
/// a lead commits (the end is then recorded at the expiry, as always).
async fn nothing_commits_in_a_session_past_its_expiry_before_its_end_is_recorded(
    db: &TestDatabase,
) {
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
    app.add_note(&acting, lead, NoteBody::parse("in time").unwrap())
        .await
        .unwrap();
    assert!(app.lead_detail(&acting, lead).await.is_ok());
    let before = head(&app).await;
    app.clock().advance(Duration::minutes(60));
    let late = app
        .add_note(&acting, lead, NoteBody::parse("too late").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            late,
            AppError::ImpersonationEnded { .. } | AppError::Conflict(_)
        ),
        "{late:?}"
    );
    assert!(
        app.lead_detail(&acting, lead).await.is_err(),
        "no view either"
    );
    let after: Vec<String> = events_after(&app, before)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(
        after.iter().all(|t| t == "ImpersonationEnded"),
        "only the end may have been recorded meanwhile: {after:?}"
    );
}
