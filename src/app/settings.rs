//! Settings, templates and communication tools: the subject's own.

use crm_events::catalog::values::TemplateKind;
use crm_events::ids::TemplateId;
use crm_events::DomainEvent;

use super::aggregates::{load_settings, settings_stream, Loaded};
use super::{expect, retry_lost_races, App, AppError, RequestContext, Written};
use crate::domain::policy::{authorize, Action};
use crate::domain::settings::{self, Settings, SettingsChange, SettingsRejection, TemplateEdit};
use crate::domain::values::{TemplateBody, TemplateName, TemplateSubject};

impl App {
    /// The subject's settings and templates.
    ///
    /// # Errors
    /// Store failures.
    pub async fn settings(&self, ctx: &RequestContext) -> Result<Loaded<Settings>, AppError> {
        authorize(&ctx.caller, Action::ManageOwnSettings)?;
        load_settings(&self.store, ctx.subject()).await
    }

    /// Changes settings keys.
    ///
    /// # Errors
    /// [`AppError::Conflict`] for a stale `if_match`.
    pub async fn change_settings(
        &self,
        ctx: &RequestContext,
        change: SettingsChange,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        self.on_settings(ctx, if_match, |s| Ok(settings::change(s, change.clone())))
            .await
    }

    /// Creates a template; returns its id.
    ///
    /// # Errors
    /// [`AppError::Validation`] for a subject that does not fit the kind.
    pub async fn create_template(
        &self,
        ctx: &RequestContext,
        kind: TemplateKind,
        name: TemplateName,
        subject: Option<TemplateSubject>,
        body: TemplateBody,
    ) -> Result<(TemplateId, Written), AppError> {
        let id = TemplateId::from_uuid(ctx.new_id("template"));
        let written = self
            .on_settings(ctx, None, |_| {
                settings::create_template(id, kind, name.clone(), subject.clone(), body.clone())
            })
            .await?;
        Ok((id, written))
    }

    /// Edits a template (at `if_match`, when given).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown template; [`AppError::Conflict`] when it
    /// is no longer at `if_match`.
    pub async fn update_template(
        &self,
        ctx: &RequestContext,
        id: TemplateId,
        edit: TemplateEdit,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        self.on_settings(ctx, None, |s| {
            settings::expect_template_version(s, id, if_match)?;
            settings::update_template(s, id, edit.clone())
        })
        .await
    }

    /// Deletes a template (at `if_match`, when given).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown template; [`AppError::Conflict`] when it
    /// is no longer at `if_match`.
    pub async fn delete_template(
        &self,
        ctx: &RequestContext,
        id: TemplateId,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        self.on_settings(ctx, None, |s| {
            settings::expect_template_version(s, id, if_match)?;
            settings::delete_template(s, id)
        })
        .await
    }

    async fn on_settings<F>(
        &self,
        ctx: &RequestContext,
        if_match: Option<u64>,
        decide: F,
    ) -> Result<Written, AppError>
    where
        F: Fn(&Settings) -> Result<Vec<DomainEvent>, SettingsRejection>,
    {
        retry_lost_races(if_match, || async {
            let current = self.settings(ctx).await?;
            // Exact(0) is "no stream yet" for a user who never changed a setting.
            let expected = expect(if_match, current.version)?;
            let events = decide(&current.state)?;
            self.record(ctx, settings_stream(ctx.subject()), expected, events)
                .await
        })
        .await
    }
}
