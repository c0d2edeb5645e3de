//! Raw command input as clients send it (JSON bodies, command-line arguments), and
//! its conversion into validated domain values. This is the edge: unknown fields are
//! refused, every bad field is reported by name (all of them, not only the first),
//! and nothing past [`parse`](LeadInput::parse) sees unvalidated data.

use crm_events::catalog::values::{
    Channel, Direction, ImpersonationMode, Role, Stage, TemplateKind,
};
use crm_events::ids::UserId;
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::domain::lead::{LeadEdit, NewLead};
use crate::domain::settings::TemplateEdit;
use crate::domain::site::SiteSettingsEdit;
use crate::domain::values::{
    DueAt, Email, FieldError, LeadSource, NoteBody, Password, PersonName, Phone, Reason, Summary,
    Tags, TaskTitle, TemplateBody, TemplateName, TemplateSubject,
};

/// Collects field errors while parsing a body.
#[derive(Debug, Default)]
struct Check(Vec<FieldError>);

impl Check {
    /// The parsed value, or `None` after noting the error under `field`.
    fn field<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        parsed
            .map_err(|why| self.0.push(FieldError::new(field, why)))
            .ok()
    }

    /// An optional field: absent or null is `None`.
    fn optional<T>(
        &mut self,
        field: &str,
        raw: Option<&str>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(text) => self.field(field, parse(text)).map(Some),
        }
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            // Every field parsed, so every `Option` above is `Some`.
            value().ok_or_else(|| vec![FieldError::new("body", "invalid")])
        } else {
            Err(self.0)
        }
    }
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn named<T: Copy>(
    field: &str,
    text: &str,
    parse: fn(&str) -> Option<T>,
    all: &[T],
    show: fn(&T) -> &'static str,
) -> Result<T, String> {
    parse(text).ok_or_else(|| {
        let allowed: Vec<&str> = all.iter().map(show).collect();
        format!("{field} must be one of {}", allowed.join(", "))
    })
}

fn stage(text: &str) -> Result<Stage, String> {
    named("stage", text, Stage::parse, Stage::ALL, |s| s.as_str())
}

/// `POST /api/leads`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadInput {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub assigned_agent_id: Option<UserId>,
}

impl LeadInput {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<NewLead, Vec<FieldError>> {
        let mut c = Check::default();
        let name = c.field("name", PersonName::parse(&self.name));
        let email = c.optional("email", self.email.as_deref(), Email::parse);
        let phone = c.optional("phone", self.phone.as_deref(), Phone::parse);
        let source = c.optional("source", self.source.as_deref(), LeadSource::parse);
        let stage = c.optional("stage", self.stage.as_deref(), stage);
        let tags = c.field("tags", Tags::parse(&self.tags.unwrap_or_default()));
        c.finish(|| {
            Some(NewLead {
                name: name?,
                email: email?,
                phone: phone?,
                source: source?,
                stage: stage?.unwrap_or(Stage::New),
                tags: tags?,
                assigned_agent_id: self.assigned_agent_id,
            })
        })
    }
}

/// `PATCH /api/leads/{id}`: absent fields stay; `null` clears email, phone, source.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub source: Option<Option<String>>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
}

impl LeadPatch {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<LeadEdit, Vec<FieldError>> {
        let mut c = Check::default();
        let name = c.optional("name", self.name.as_deref(), PersonName::parse);
        let email = self
            .email
            .map(|e| c.optional("email", e.as_deref(), Email::parse));
        let phone = self
            .phone
            .map(|p| c.optional("phone", p.as_deref(), Phone::parse));
        let source = self
            .source
            .map(|s| c.optional("source", s.as_deref(), LeadSource::parse));
        let stage = c.optional("stage", self.stage.as_deref(), stage);
        let tags = match self.tags {
            None => Some(None),
            Some(tags) => c.field("tags", Tags::parse(&tags)).map(Some),
        };
        c.finish(|| {
            Some(LeadEdit {
                name: name?,
                email: email.map_or(Some(None), |e| e.map(Some))?,
                phone: phone.map_or(Some(None), |p| p.map(Some))?,
                source: source.map_or(Some(None), |s| s.map(Some))?,
                stage: stage?,
                tags: tags?,
            })
        })
    }
}

/// `POST /api/leads/{id}/notes`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    pub body: String,
}

impl NoteInput {
    /// # Errors
    /// A [`FieldError`] for `body`.
    pub fn parse(self) -> Result<NoteBody, Vec<FieldError>> {
        let mut c = Check::default();
        let body = c.field("body", NoteBody::parse(&self.body));
        c.finish(|| body)
    }
}

/// `POST /api/leads/{id}/tasks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskInput {
    pub title: String,
    pub due_at: String,
}

impl TaskInput {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<(TaskTitle, DueAt), Vec<FieldError>> {
        let mut c = Check::default();
        let title = c.field("title", TaskTitle::parse(&self.title));
        let due = c.field("due_at", DueAt::parse(&self.due_at));
        c.finish(|| Some((title?, due?)))
    }
}

/// `POST /api/leads/{id}/communications`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommunicationInput {
    pub channel: String,
    pub direction: String,
    pub summary: String,
}

impl CommunicationInput {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<(Channel, Direction, Summary), Vec<FieldError>> {
        let mut c = Check::default();
        let channel = c.field(
            "channel",
            named(
                "channel",
                &self.channel,
                Channel::parse,
                Channel::ALL,
                |v| v.as_str(),
            ),
        );
        let direction = c.field(
            "direction",
            named(
                "direction",
                &self.direction,
                Direction::parse,
                Direction::ALL,
                |v| v.as_str(),
            ),
        );
        let summary = c.field("summary", Summary::parse(&self.summary));
        c.finish(|| Some((channel?, direction?, summary?)))
    }
}

/// `POST /api/users`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub name: String,
    pub email: String,
    pub role: String,
    pub password: String,
}

impl UserInput {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<(PersonName, Email, Role, Password), Vec<FieldError>> {
        let mut c = Check::default();
        let name = c.field("name", PersonName::parse(&self.name));
        let email = c.field("email", Email::parse(&self.email));
        let role = c.field("role", role(&self.role));
        let password = c.field("password", Password::parse(&self.password));
        c.finish(|| Some((name?, email?, role?, password?)))
    }
}

fn role(text: &str) -> Result<Role, String> {
    named("role", text, Role::parse, Role::ALL, |r| r.as_str())
}

/// `PATCH /api/users/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

impl UserPatch {
    /// # Errors
    /// A [`FieldError`] for `role`.
    pub fn parse(self) -> Result<(Option<Role>, Option<bool>), Vec<FieldError>> {
        let mut c = Check::default();
        let role = c.optional("role", self.role.as_deref(), role);
        c.finish(|| Some((role?, self.active)))
    }
}

/// `PATCH /api/site/settings`.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSettingsPatch {
    #[serde(default)]
    pub impersonation_enabled: Option<bool>,
    #[serde(default)]
    pub impersonation_max_minutes: Option<u32>,
    #[serde(default)]
    pub impersonation_reason_required: Option<bool>,
    #[serde(default)]
    pub notify_subject_on_impersonation: Option<bool>,
}

impl SiteSettingsPatch {
    /// # Errors
    /// A [`FieldError`] for an out-of-range `impersonation_max_minutes`.
    pub fn parse(self) -> Result<SiteSettingsEdit, Vec<FieldError>> {
        SiteSettingsEdit {
            enabled: self.impersonation_enabled,
            max_minutes: self.impersonation_max_minutes,
            reason_required: self.impersonation_reason_required,
            notify_subject: self.notify_subject_on_impersonation,
        }
        .validate()
        .map_err(|why| vec![FieldError::new("impersonation_max_minutes", why)])
    }
}

/// `POST /api/templates`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
}

impl TemplateInput {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(
        self,
    ) -> Result<
        (
            TemplateKind,
            TemplateName,
            Option<TemplateSubject>,
            TemplateBody,
        ),
        Vec<FieldError>,
    > {
        let mut c = Check::default();
        let kind = c.field(
            "kind",
            named(
                "kind",
                &self.kind,
                TemplateKind::parse,
                TemplateKind::ALL,
                |k| k.as_str(),
            ),
        );
        let name = c.field("name", TemplateName::parse(&self.name));
        let subject = c.optional("subject", self.subject.as_deref(), TemplateSubject::parse);
        let body = c.field("body", TemplateBody::parse(&self.body));
        c.finish(|| Some((kind?, name?, subject?, body?)))
    }
}

/// `PATCH /api/templates/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
}

impl TemplatePatch {
    /// # Errors
    /// One [`FieldError`] per bad field.
    pub fn parse(self) -> Result<TemplateEdit, Vec<FieldError>> {
        let mut c = Check::default();
        let name = c.optional("name", self.name.as_deref(), TemplateName::parse);
        let subject = c.optional("subject", self.subject.as_deref(), TemplateSubject::parse);
        let body = c.optional("body", self.body.as_deref(), TemplateBody::parse);
        c.finish(|| {
            Some(TemplateEdit {
                name: name?,
                subject: subject?,
                body: body?,
            })
        })
    }
}

/// `POST /api/impersonation`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpersonationInput {
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    #[serde(default)]
    pub reason: Option<String>,
    /// `edit` (the default, when absent) or `view`: a view-only session refuses
    /// every write. `null` is refused rather than read as the default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub mode: Option<serde_json::Value>,
}

/// A field that is present, `null` included (an absent one stays `None`).
fn present<'de, D: Deserializer<'de>>(value: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(value).map(Some)
}

impl ImpersonationInput {
    /// The mode asked for; `edit` when none.
    ///
    /// # Errors
    /// A [`FieldError`] for another value.
    pub fn mode(&self) -> Result<ImpersonationMode, Vec<FieldError>> {
        let text = match &self.mode {
            None => return Ok(ImpersonationMode::Edit),
            Some(serde_json::Value::String(text)) => text.as_str(),
            Some(_) => "",
        };
        named(
            "mode",
            text,
            ImpersonationMode::parse,
            ImpersonationMode::ALL,
            |m| m.as_str(),
        )
        .map_err(|message| vec![FieldError::new("mode", message)])
    }

    /// The reason, trimmed; blank is none.
    ///
    /// # Errors
    /// A [`FieldError`] for a reason over 500 characters.
    pub fn reason(&self) -> Result<Option<Reason>, Vec<FieldError>> {
        match self
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            None => Ok(None),
            Some(text) => Reason::parse(text)
                .map(Some)
                .map_err(|why| vec![FieldError::new("reason", why)]),
        }
    }
}

/// `POST /api/leads/{id}/erase`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureInput {
    /// Why the lead's personal data is erased (a request under GDPR Art. 17, ...):
    /// required, at most 500 characters. It is recorded: keep personal data out.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

impl ErasureInput {
    /// The reason, trimmed.
    ///
    /// # Errors
    /// A [`FieldError`] for a blank reason or one over 500 characters.
    pub fn parse(&self) -> Result<Reason, Vec<FieldError>> {
        Reason::parse(&self.reason).map_err(|why| vec![FieldError::new("reason", why)])
    }
}

/// `POST /api/audit/impersonations/{id}/revert`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevertInput {
    /// Why the session is reverted: required, at most 500 characters; recorded.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// Only plan: say what would be reverted, append nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl RevertInput {
    /// The reason, trimmed.
    ///
    /// # Errors
    /// A [`FieldError`] for a blank reason or one over 500 characters.
    pub fn parse(&self) -> Result<Reason, Vec<FieldError>> {
        Reason::parse(&self.reason).map_err(|why| vec![FieldError::new("reason", why)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body<T: serde::de::DeserializeOwned>(
        value: serde_json::Value,
    ) -> Result<T, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn every_bad_field_of_a_lead_is_named() {
        let input: LeadInput = body(json!({
            "name": " ", "email": "nope", "phone": "12", "stage": "won",
            "tags": ["ok", "x".repeat(41)]
        }))
        .unwrap();
        let errors = input.parse().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "phone", "stage", "tags"]);
        assert!(
            errors[3].message.contains("attempted_contact"),
            "{}",
            errors[3].message
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_refused_by_the_body_itself() {
        assert!(body::<LeadInput>(json!({"name": "Ann", "price": 5})).is_err());
        assert!(body::<LeadInput>(json!({"name": 5})).is_err());
        assert!(body::<UserPatch>(json!({"active": "yes"})).is_err());
        assert!(body::<ImpersonationInput>(json!({"user_id": "not-a-uuid"})).is_err());
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let patch: LeadPatch = body(json!({"email": null, "stage": "nurture"})).unwrap();
        let edit = patch.parse().unwrap();
        assert_eq!(edit.email, Some(None), "null clears");
        assert_eq!(edit.phone, None, "absent stays");
        assert_eq!(edit.stage, Some(Stage::Nurture));
        let patch: LeadPatch = body(json!({"phone": "+1 555 0100"})).unwrap();
        assert!(patch.parse().unwrap().phone.unwrap().is_some());
    }

    #[test]
    fn users_tasks_communications_and_templates_name_their_bad_fields() {
        let user: UserInput =
            body(json!({"name": "", "email": "x", "role": "boss", "password": "short"})).unwrap();
        assert_eq!(user.parse().unwrap_err().len(), 4);
        let task: TaskInput = body(json!({"title": "Call", "due_at": "soon"})).unwrap();
        assert_eq!(task.parse().unwrap_err()[0].field, "due_at");
        let comm: CommunicationInput =
            body(json!({"channel": "fax", "direction": "out", "summary": ""})).unwrap();
        assert_eq!(comm.parse().unwrap_err().len(), 3);
        let template: TemplateInput =
            body(json!({"kind": "letter", "name": "x", "body": ""})).unwrap();
        let fields: Vec<String> = template
            .parse()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["kind", "body"]);
        let site: SiteSettingsPatch = body(json!({"impersonation_max_minutes": 0})).unwrap();
        assert_eq!(
            site.parse().unwrap_err()[0].field,
            "impersonation_max_minutes"
        );
    }
}
