//! Sites, users, passwords and sign-in.

use std::net::IpAddr;

use crm_events::catalog::user::{
    NotificationsRead, UserLoggedIn, UserLoggedOut, UserPasswordChanged,
};
use crm_events::catalog::values::{EndReason, ImpersonationMode, Role};
use crm_events::ids::{CorrelationId, ImpersonationId, SiteId, UserId};
use crm_events::{DomainEvent, ExpectedVersion, Metadata, StoreError, StreamAppend};

use super::aggregates::{site_stream, user_stream, Loaded};
use super::sessions::{self, Holding, SessionRow, Withdrawn};
use super::{expect, retry_lost_races, App, AppError, RequestContext, Written, SESSION_LIFETIME};
use crate::domain::policy::{authorize, may_impersonate, Action, Caller};
use crate::domain::site::{self, Site, SiteSettingsEdit};
use crate::domain::user::{self, User};
use crate::domain::values::{Email, Password, PersonName, SiteName};

/// A new site and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedSite {
    pub site_id: SiteId,
    pub owner_id: UserId,
}

impl App {
    /// Creates a site with its owner. Done by the operator (the command line), so
    /// the actor is [`UserId::SYSTEM`].
    ///
    /// # Errors
    /// [`AppError::Conflict`] when the email is taken; store failures.
    pub async fn create_site(
        &self,
        name: SiteName,
        owner_name: PersonName,
        owner_email: Email,
        password: Password,
    ) -> Result<CreatedSite, AppError> {
        let site_id = SiteId::generate();
        let owner_id = UserId::generate();
        let hash = sessions::hash_password(password).await?;
        let credentials = sessions::credentials_created(owner_id, site_id, &owner_email, &hash);
        let owner = DomainEvent::from(crm_events::catalog::user::UserCreated {
            name: owner_name.into_inner(),
            email: owner_email.as_str().to_owned(),
            role: Role::Owner,
        });
        let outcome = self
            .store
            .append_with(
                vec![
                    StreamAppend {
                        site_id,
                        stream: site_stream(site_id),
                        expected: ExpectedVersion::NoStream,
                        events: site::create(name)
                            .iter()
                            .map(DomainEvent::to_new_event)
                            .collect(),
                    },
                    StreamAppend {
                        site_id,
                        stream: user_stream(owner_id),
                        expected: ExpectedVersion::NoStream,
                        events: vec![owner.to_new_event()],
                    },
                ],
                Metadata::acting_as_self(UserId::SYSTEM),
                vec![credentials],
            )
            .await
            .map_err(|error| email_taken(error, &owner_email))?;
        self.projector.wait_for(outcome.last_position).await?;
        Ok(CreatedSite { site_id, owner_id })
    }

    /// Signs in with email and password; returns the bearer token and the context
    /// of the new session. [`App::login_from`] with no client address: only the
    /// account's failures are counted.
    ///
    /// # Errors
    /// As [`App::login_from`].
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        correlation_id: CorrelationId,
    ) -> Result<(String, RequestContext), AppError> {
        self.login_from(email, password, None, correlation_id).await
    }

    /// Signs in with email and password from `client` (the peer's address, when
    /// known); returns the bearer token and the context of the new session.
    /// Repeated failures for the account or from the client make the next attempts
    /// wait (see [`throttle`](super::throttle)), before the password is looked at.
    ///
    /// # Errors
    /// [`AppError::Unauthenticated`] for a wrong email or password (the same answer
    /// for both) or a deactivated account; [`AppError::RateLimited`] while the
    /// account or the client must wait.
    pub async fn login_from(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
        correlation_id: CorrelationId,
    ) -> Result<(String, RequestContext), AppError> {
        if let Some(retry_after_secs) = self.throttle.wait(email, client, self.clock.now()) {
            tracing::warn!(?client, "sign-in refused: too many failed attempts");
            return Err(AppError::RateLimited { retry_after_secs });
        }
        let db = self.store.database();
        let found = sessions::find_credentials(db, email).await?;
        let (user_id, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        if !sessions::verify_password(hash, password.to_owned()).await {
            self.throttle.failed(email, client, self.clock.now());
            return Err(AppError::Unauthenticated("wrong email or password"));
        }
        self.throttle.succeeded(email);
        let loaded = self
            .load_user(user_id.ok_or(AppError::Unauthenticated("wrong email or password"))?)
            .await?;
        let user = loaded.state;
        if !user.active {
            return Err(AppError::Unauthenticated("this account is deactivated"));
        }
        let token = sessions::new_token()?;
        let token_hash = sessions::token_hash(&token);
        let ctx = RequestContext {
            caller: Caller::as_self(user.view()),
            session: token_hash,
            correlation_id,
            idempotency_key: None,
            http_request: None,
        };
        let now = self.clock.now();
        let opened = sessions::session_opened(
            &token_hash,
            user.id,
            user.site_id,
            now,
            now + SESSION_LIFETIME,
        );
        self.record_with(
            &ctx,
            user_stream(user.id),
            ExpectedVersion::Any,
            vec![UserLoggedIn {}.into()],
            vec![opened],
        )
        .await
        .map_err(|error| match error {
            // Deactivated between the check above and the append.
            AppError::Store(StoreError::SideWriteRefused { .. }) => {
                AppError::Unauthenticated("this account is deactivated")
            }
            other => other,
        })?;
        Ok((token, ctx))
    }

    /// Resolves a bearer token into the request's context. Re-checks an ongoing
    /// impersonation on every request: an expired one ends (recorded as expired at its
    /// expiry time), one the policy no longer allows is revoked, and in both cases the
    /// request acts as the admin again.
    ///
    /// # Errors
    /// [`AppError::Unauthenticated`] for an unknown, ended or expired session, or a
    /// deactivated user.
    pub async fn authenticate(
        &self,
        token: &str,
        correlation_id: CorrelationId,
        idempotency_key: Option<String>,
    ) -> Result<RequestContext, AppError> {
        let db = self.store.database();
        let token_hash = sessions::token_hash(token);
        let now = self.clock.now();
        let session = sessions::find_live_session(db, &token_hash, now)
            .await?
            .ok_or(AppError::Unauthenticated(
                "sign in first: the session is missing, expired or ended",
            ))?;
        let actor = self
            .load_user(UserId::from_uuid(session.user_id))
            .await?
            .state;
        if !actor.active {
            // Its deactivation ended every session of the account; one opened
            // before that and read just now is refused all the same.
            return Err(AppError::Unauthenticated("this account is deactivated"));
        }
        let mut ctx = RequestContext {
            caller: Caller::as_self(actor.view()),
            session: token_hash,
            correlation_id,
            idempotency_key,
            http_request: None,
        };
        if let Some((id, subject, mode)) = self.ongoing_impersonation(&ctx, &session).await? {
            ctx.caller = Caller {
                actor: actor.view(),
                subject: subject.view(),
                impersonation: Some(id),
                view_only: mode == ImpersonationMode::View,
            };
        }
        Ok(ctx)
    }

    /// The impersonation the session is in, if it is still allowed; ends it otherwise.
    async fn ongoing_impersonation(
        &self,
        ctx: &RequestContext,
        session: &SessionRow,
    ) -> Result<Option<(ImpersonationId, User, ImpersonationMode)>, AppError> {
        let (Some(id), Some(subject_id)) = (session.impersonation_id, session.impersonated_user_id)
        else {
            return Ok(None);
        };
        let id = ImpersonationId::from_uuid(id);
        let subject = self.load_user(UserId::from_uuid(subject_id)).await?.state;
        let rules = self.load_site(ctx.site()).await?.state.rules;
        let allowed = may_impersonate(&ctx.caller, &subject.view(), &rules, true).is_ok();
        let session_state = self.load_impersonation(id).await?.state;
        if allowed && session_state.is_live(self.clock.now()) {
            return Ok(Some((id, subject, session_state.mode)));
        }
        self.end_impersonation_of(ctx, id, subject.id, EndReason::Revoked)
            .await?;
        Ok(None)
    }

    /// Signs out: ends the session, and any impersonation in it (`logged_out`).
    ///
    /// # Errors
    /// Store failures.
    pub async fn logout(&self, ctx: &RequestContext) -> Result<Written, AppError> {
        if let Some(id) = ctx.impersonation() {
            self.end_impersonation_of(ctx, id, ctx.subject(), EndReason::LoggedOut)
                .await?;
        }
        let as_admin = ctx.as_actor();
        self.record_with(
            &as_admin,
            user_stream(ctx.actor()),
            ExpectedVersion::Any,
            vec![UserLoggedOut {}.into()],
            vec![sessions::session_closed(&ctx.session, self.clock.now())],
        )
        .await
        .map_err(|error| match error {
            AppError::Store(StoreError::SideWriteRefused { .. }) => {
                AppError::Unauthenticated("this session has already ended")
            }
            other => other,
        })
    }

    /// Whether a long read (an event stream, an export) that `ctx` opened for
    /// `action` may go on: `None` while it may, else why it must end
    /// (`logged_out`, `expired`, `deactivated`, `impersonation` when the session
    /// has since logged in as someone, `forbidden` when the role lost the right).
    ///
    /// # Errors
    /// Store failures.
    pub async fn why_reading_ends(
        &self,
        ctx: &RequestContext,
        action: Action,
    ) -> Result<Option<&'static str>, AppError> {
        let Some(session) = sessions::find_session(self.store.database(), &ctx.session).await?
        else {
            return Ok(Some("logged_out"));
        };
        let actor = self.load_user(ctx.actor()).await?.state;
        let now = self.clock.now();
        Ok(if !actor.active {
            Some("deactivated")
        } else if session.ended_at.is_some() {
            Some("logged_out")
        } else if session.expires_at <= now {
            Some("expired")
        } else if session.impersonation_id != ctx.impersonation().map(|id| id.as_uuid()) {
            Some("impersonation")
        } else if authorize(&Caller::as_self(actor.view()), action).is_err() {
            Some("forbidden")
        } else {
            None
        })
    }

    /// The user `id` of the caller's site.
    ///
    /// # Errors
    /// [`AppError::NotFound`] when there is no such user on the caller's site.
    pub async fn user(&self, ctx: &RequestContext, id: UserId) -> Result<Loaded<User>, AppError> {
        let loaded = self.load_user(id).await?;
        if loaded.state.site_id != ctx.site() {
            return Err(AppError::NotFound("user"));
        }
        Ok(loaded)
    }

    /// Creates a user of the caller's site.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] / [`AppError::ImpersonationForbidden`] from the policy,
    /// [`AppError::Conflict`] when the email is taken.
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        name: PersonName,
        email: Email,
        role: Role,
        password: Password,
    ) -> Result<(User, Written), AppError> {
        authorize(&ctx.caller, Action::ManageUsers)?;
        let events = user::create(&ctx.caller.subject, name, &email, role)?;
        let id = UserId::from_uuid(ctx.new_id("user"));
        let hash = sessions::hash_password(password).await?;
        let credentials = sessions::credentials_created(id, ctx.site(), &email, &hash);
        let written = self
            .record_with(
                ctx,
                user_stream(id),
                ExpectedVersion::NoStream,
                events,
                vec![credentials],
            )
            .await
            .map_err(|error| match error {
                AppError::Store(store) => email_taken(store, &email),
                other => other,
            })?;
        Ok((self.load_user(id).await?.state, written))
    }

    /// Changes a user's role and/or active flag. Deactivation signs the user out
    /// everywhere (in the same transaction); any impersonation the change no
    /// longer allows is recorded as revoked at once.
    ///
    /// # Errors
    /// As [`App::create_user`]; [`AppError::NotFound`] for a user of another site;
    /// [`AppError::Conflict`] for a stale `if_match`.
    pub async fn update_user(
        &self,
        ctx: &RequestContext,
        id: UserId,
        role: Option<Role>,
        active: Option<bool>,
        if_match: Option<u64>,
    ) -> Result<(User, Written), AppError> {
        authorize(&ctx.caller, Action::ManageUsers)?;
        // Without If-Match, a sign-in of the user that slips in between (it is
        // recorded on the user's stream) is no reason to refuse.
        let written = retry_lost_races(if_match, || async {
            let target = self.user(ctx, id).await?;
            let by = &ctx.caller.subject;
            let mut events = Vec::new();
            if let Some(role) = role {
                events.extend(user::change_role(by, &target.state, role)?);
            }
            if let Some(active) = active {
                events.extend(user::set_active(by, &target.state, active)?);
            }
            let expected = expect(if_match, target.version)?;
            // Deactivation signs the user out everywhere and stops new sign-ins,
            // in the same transaction; reactivation lets them sign in again.
            let now = self.clock.now();
            let mut side = match active {
                Some(false) if target.state.active => vec![
                    sessions::credentials_active(id, false),
                    sessions::sessions_of_user_closed(id, now),
                ],
                Some(true) if !target.state.active => {
                    vec![sessions::credentials_active(id, true)]
                }
                _ => Vec::new(),
            };
            // The impersonations the change withdraws the right to are marked
            // revoked with it: no write made in them commits after it.
            side.extend(
                withdrawn(&target.state, role, active)
                    .into_iter()
                    .map(|w| sessions::impersonations_revoked(w, now)),
            );
            self.record_with(ctx, user_stream(id), expected, events, side)
                .await
        })
        .await?;
        let updated = self.load_user(id).await?.state;
        self.revoke_impersonations_involving(ctx, id).await?;
        Ok((updated, written))
    }

    /// Re-checks every impersonation in which `user` takes part, and records
    /// those the policy no longer allows as revoked, now.
    pub(crate) async fn revoke_impersonations_involving(
        &self,
        ctx: &RequestContext,
        user: UserId,
    ) -> Result<(), AppError> {
        let held = sessions::holding(self.store.database(), Holding::Involving(user)).await?;
        self.end_impersonations_due(&held, ctx.correlation_id).await
    }

    /// Records the end of each impersonation these sessions hold whose end is
    /// due: expired (at its expiry), held by a session that ended or expired, or
    /// no longer allowed by the policy (revoked). The rest are left running. One
    /// that cannot be recorded does not hold up the others.
    ///
    /// # Errors
    /// The last store failure met, after every session was tried.
    pub(crate) async fn end_impersonations_due(
        &self,
        held: &[SessionRow],
        correlation_id: CorrelationId,
    ) -> Result<(), AppError> {
        let mut failed = Ok(());
        for session in held {
            if let Err(error) = self.end_if_due(session, correlation_id).await {
                tracing::warn!(%error, "could not record the end of an impersonation");
                failed = Err(error);
            }
        }
        failed
    }

    async fn end_if_due(
        &self,
        session: &SessionRow,
        correlation_id: CorrelationId,
    ) -> Result<(), AppError> {
        let (Some(id), Some(subject)) = (session.impersonation_id, session.impersonated_user_id)
        else {
            return Ok(());
        };
        let id = ImpersonationId::from_uuid(id);
        let admin = self
            .load_user(UserId::from_uuid(session.user_id))
            .await?
            .state;
        let subject = self.load_user(UserId::from_uuid(subject)).await?.state;
        let rules = self.load_site(admin.site_id).await?.state.rules;
        let admin_caller = Caller::as_self(admin.view());
        // Sessions written before the expiry was kept with them: from the log.
        let expires_at = match session.impersonation_expires_at {
            Some(at) => at,
            None => self.load_impersonation(id).await?.state.expires_at,
        };
        let now = self.clock.now();
        let reason = if expires_at <= now {
            EndReason::Expired
        } else if session.impersonation_revoked_at.is_some() {
            EndReason::Revoked
        } else if !session.is_live(now) {
            if session.ended_at.is_some() {
                EndReason::Revoked
            } else {
                EndReason::Expired
            }
        } else if may_impersonate(&admin_caller, &subject.view(), &rules, true).is_err() {
            EndReason::Revoked
        } else {
            return Ok(());
        };
        let theirs = RequestContext {
            caller: admin_caller,
            session: session.token_hash(),
            correlation_id,
            idempotency_key: None,
            http_request: None,
        };
        self.end_impersonation_of(&theirs, id, subject.id, reason)
            .await
            .map(drop)
    }

    /// Changes the caller's own password.
    ///
    /// # Errors
    /// [`AppError::ImpersonationForbidden`] while impersonating;
    /// [`AppError::Validation`] when the current password is wrong.
    pub async fn change_password(
        &self,
        ctx: &RequestContext,
        current: &str,
        new: Password,
    ) -> Result<Written, AppError> {
        authorize(&ctx.caller, Action::ChangeOwnPassword)?;
        let db = self.store.database();
        let stored = sessions::password_hash_of(db, ctx.actor()).await?;
        if !sessions::verify_password(stored.clone(), current.to_owned()).await {
            return Err(AppError::invalid(
                "current_password",
                "the current password is wrong",
            ));
        }
        let hash = sessions::hash_password(new).await?;
        let checked = stored.unwrap_or_default();
        self.record_with(
            ctx,
            user_stream(ctx.actor()),
            ExpectedVersion::Any,
            vec![UserPasswordChanged {}.into()],
            vec![sessions::password_changed(ctx.actor(), &checked, &hash)],
        )
        .await
        .map_err(|error| match error {
            AppError::Store(StoreError::SideWriteRefused { .. }) => AppError::Conflict(
                "the password was changed meanwhile: sign in again and retry".into(),
            ),
            other => other,
        })
    }

    /// Marks the caller's notifications read, up to the one at `up_to` (all, when
    /// `None`). Appends nothing when none of them is unread. Never while logged in
    /// as someone: the agent is the one to read them.
    ///
    /// # Errors
    /// [`AppError::ImpersonationForbidden`]; store failures.
    pub async fn mark_notifications_read(
        &self,
        ctx: &RequestContext,
        up_to: Option<i64>,
    ) -> Result<Option<Written>, AppError> {
        authorize(&ctx.caller, Action::MarkOwnNotificationsRead)?;
        self.settle_for(&[crm_projections::notifications::NAME])
            .await?;
        let db = self.store.database();
        let Some(latest) =
            crm_projections::notifications::latest_unread(db, ctx.actor(), up_to).await?
        else {
            return Ok(None);
        };
        let read = NotificationsRead {
            up_to_position: latest,
        };
        self.record(
            ctx,
            user_stream(ctx.actor()),
            ExpectedVersion::Any,
            vec![read.into()],
        )
        .await
        .map(Some)
    }

    /// The caller's site with its impersonation settings.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] unless owner or admin.
    pub async fn site_settings(&self, ctx: &RequestContext) -> Result<Loaded<Site>, AppError> {
        authorize(&ctx.caller, Action::ReadSiteSettings)?;
        self.load_site(ctx.site()).await
    }

    /// Changes the site's impersonation settings (owner only). Switching
    /// impersonation off revokes the sessions in progress at once.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`],
    /// [`AppError::Validation`], [`AppError::Conflict`] for a stale `if_match`.
    pub async fn change_site_settings(
        &self,
        ctx: &RequestContext,
        edit: SiteSettingsEdit,
        if_match: Option<u64>,
    ) -> Result<(Site, Written), AppError> {
        authorize(&ctx.caller, Action::ChangeSiteSettings)?;
        let edit = edit
            .validate()
            .map_err(|why| AppError::invalid("impersonation_max_minutes", why))?;
        let site = self.load_site(ctx.site()).await?;
        let expected = expect(if_match, site.version)?;
        let events = site::change_settings(&site.state, edit);
        let switched_off = site.state.rules.enabled && edit.enabled == Some(false);
        let side = if switched_off {
            vec![sessions::impersonations_revoked(
                Withdrawn::OnSite(ctx.site()),
                self.clock.now(),
            )]
        } else {
            Vec::new()
        };
        let written = self
            .record_with(ctx, site_stream(ctx.site()), expected, events, side)
            .await?;
        // Switched off: every impersonation in progress is revoked now.
        let held = sessions::holding(self.store.database(), Holding::OnSite(ctx.site())).await?;
        self.end_impersonations_due(&held, ctx.correlation_id)
            .await?;
        Ok((self.load_site(ctx.site()).await?.state, written))
    }
}

/// A refused credentials row is a taken email; anything else as it is.
fn email_taken(error: StoreError, email: &Email) -> AppError {
    match error {
        StoreError::SideWriteRefused {
            what: sessions::CREDENTIALS,
            taken: true,
        } => AppError::Conflict(format!("{email} is already in use")),
        other => other.into(),
    }
}

/// Whose impersonations a change of `user`'s role and active flag withdraws the
/// right to, as the policy has it: only active owners and admins log in as
/// someone, and only into active agents.
fn withdrawn(user: &User, role: Option<Role>, active: Option<bool>) -> Vec<Withdrawn> {
    let mut withdrawn = Vec::new();
    let deactivated = user.active && active == Some(false);
    let role_after = role.unwrap_or(user.role);
    let was_admin = matches!(user.role, Role::Owner | Role::Admin);
    if was_admin && (deactivated || !matches!(role_after, Role::Owner | Role::Admin)) {
        withdrawn.push(Withdrawn::AsAdmin(user.id));
    }
    if user.role == Role::Agent && (deactivated || role_after != Role::Agent) {
        withdrawn.push(Withdrawn::AsSubject(user.id));
    }
    withdrawn
}
