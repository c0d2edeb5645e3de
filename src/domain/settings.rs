//! A user's settings aggregate: settings keys (communication tools among them) and
//! email and text templates. Pure decisions; a change that changes nothing decides
//! no events.

use std::collections::BTreeMap;

use crm_events::catalog::settings::*;
use crm_events::catalog::values::TemplateKind;
use crm_events::ids::TemplateId;
use crm_events::{DomainEvent, FieldChange};
use serde_json::{json, Map, Value};

use super::values::{Email, FieldError, Phone, TemplateBody, TemplateName, TemplateSubject};

/// The settings keys a user has; nothing else is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SettingKey {
    Timezone,
    EmailSignature,
    NewLeadEmail,
    TaskReminderMinutes,
    PhoneNumber,
    SenderEmail,
    TextingEnabled,
    DefaultSort,
}

/// The Lead Manager's sort orders, as `lead_manager.default_sort` accepts them.
pub const LEAD_SORTS: [&str; 4] = ["updated_at", "-updated_at", "name", "next_task_due_at"];

impl SettingKey {
    pub const ALL: [SettingKey; 8] = [
        SettingKey::Timezone,
        SettingKey::EmailSignature,
        SettingKey::NewLeadEmail,
        SettingKey::TaskReminderMinutes,
        SettingKey::PhoneNumber,
        SettingKey::SenderEmail,
        SettingKey::TextingEnabled,
        SettingKey::DefaultSort,
    ];

    /// The key as clients write it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SettingKey::Timezone => "timezone",
            SettingKey::EmailSignature => "email_signature",
            SettingKey::NewLeadEmail => "notifications.new_lead_email",
            SettingKey::TaskReminderMinutes => "notifications.task_reminder_minutes",
            SettingKey::PhoneNumber => "communication.phone_number",
            SettingKey::SenderEmail => "communication.sender_email",
            SettingKey::TextingEnabled => "communication.texting_enabled",
            SettingKey::DefaultSort => "lead_manager.default_sort",
        }
    }

    /// The key named `name`, if it is one.
    #[must_use]
    pub fn parse(name: &str) -> Option<SettingKey> {
        SettingKey::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The value a user has until they change it.
    #[must_use]
    pub fn default_value(self) -> Value {
        match self {
            SettingKey::Timezone => json!("UTC"),
            SettingKey::EmailSignature => json!(""),
            SettingKey::NewLeadEmail => json!(true),
            SettingKey::TaskReminderMinutes => json!(30),
            SettingKey::PhoneNumber | SettingKey::SenderEmail => Value::Null,
            SettingKey::TextingEnabled => json!(false),
            SettingKey::DefaultSort => json!("-updated_at"),
        }
    }

    /// Checks (and normalizes) a value for this key.
    ///
    /// # Errors
    /// A message saying what the key accepts.
    pub fn parse_value(self, value: &Value) -> Result<Value, String> {
        match (self, value) {
            (SettingKey::Timezone, Value::String(tz)) if is_timezone(tz) => Ok(json!(tz)),
            (SettingKey::Timezone, _) => {
                Err("a time zone such as \"UTC\" or \"America/Denver\"".into())
            }
            (SettingKey::EmailSignature, Value::String(s)) if s.chars().count() <= 2_000 => {
                Ok(json!(s))
            }
            (SettingKey::EmailSignature, _) => Err("text of at most 2000 characters".into()),
            (SettingKey::NewLeadEmail | SettingKey::TextingEnabled, Value::Bool(b)) => Ok(json!(b)),
            (SettingKey::NewLeadEmail | SettingKey::TextingEnabled, _) => {
                Err("true or false".into())
            }
            (SettingKey::TaskReminderMinutes, Value::Number(n))
                if n.as_u64().is_some_and(|m| m <= 10_080) =>
            {
                Ok(json!(n))
            }
            (SettingKey::TaskReminderMinutes, _) => Err("whole minutes from 0 to 10080".into()),
            (SettingKey::PhoneNumber | SettingKey::SenderEmail, Value::Null) => Ok(Value::Null),
            (SettingKey::PhoneNumber, Value::String(s)) => {
                Phone::parse(s).map(|p| json!(p.as_str()))
            }
            (SettingKey::SenderEmail, Value::String(s)) => {
                Email::parse(s).map(|e| json!(e.as_str()))
            }
            (SettingKey::PhoneNumber, _) => Err("a phone number or null".into()),
            (SettingKey::SenderEmail, _) => Err("an email address or null".into()),
            (SettingKey::DefaultSort, Value::String(s)) if LEAD_SORTS.contains(&s.as_str()) => {
                Ok(json!(s))
            }
            (SettingKey::DefaultSort, _) => Err(format!("one of {}", LEAD_SORTS.join(", "))),
        }
    }
}

fn is_timezone(tz: &str) -> bool {
    tz == "UTC"
        || (tz.len() <= 64
            && (1..=3).contains(&tz.split('/').count())
            && tz.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
            })
            && tz.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
}

/// A validated settings change: known keys with valid values.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingsChange(BTreeMap<SettingKey, Value>);

impl SettingsChange {
    /// Parses a `{key: value}` object; every unknown key and bad value is reported.
    ///
    /// # Errors
    /// One [`FieldError`] per bad key or value.
    pub fn parse(object: &Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut values = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, value) in object {
            match SettingKey::parse(name) {
                None => errors.push(FieldError {
                    field: name.clone(),
                    message: "unknown setting".into(),
                }),
                Some(key) => match key.parse_value(value) {
                    Ok(value) => {
                        values.insert(key, value);
                    }
                    Err(expected) => errors.push(FieldError {
                        field: name.clone(),
                        message: format!("expected {expected}"),
                    }),
                },
            }
        }
        if errors.is_empty() {
            Ok(Self(values))
        } else {
            Err(errors)
        }
    }
}

/// A template as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub kind: TemplateKind,
    pub name: String,
    pub subject: Option<String>,
    pub body: String,
    /// 1 when created, +1 per update.
    pub version: u64,
}

/// A user's settings and templates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settings {
    values: BTreeMap<SettingKey, Value>,
    pub templates: BTreeMap<TemplateId, Template>,
}

impl Settings {
    /// The current value of `key` (its default until changed).
    #[must_use]
    pub fn value(&self, key: SettingKey) -> Value {
        self.values
            .get(&key)
            .cloned()
            .unwrap_or_else(|| key.default_value())
    }

    /// Every key with its current value.
    #[must_use]
    pub fn all(&self) -> BTreeMap<&'static str, Value> {
        SettingKey::ALL
            .into_iter()
            .map(|k| (k.as_str(), self.value(k)))
            .collect()
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::UserSettingsChanged(e) => {
                for change in &e.changes {
                    if let Some(key) = SettingKey::parse(&change.field) {
                        self.values.insert(key, change.after.clone());
                    }
                }
            }
            DomainEvent::TemplateCreated(e) => {
                self.templates.insert(
                    e.template_id,
                    Template {
                        kind: e.kind,
                        name: e.name.clone(),
                        subject: e.subject.clone(),
                        body: e.body.clone(),
                        version: 1,
                    },
                );
            }
            DomainEvent::TemplateUpdated(e) => {
                if let Some(template) = self.templates.get_mut(&e.template_id) {
                    for change in &e.changes {
                        let text = change.after.as_str().map(str::to_owned);
                        match change.field.as_str() {
                            "name" => template.name = text.unwrap_or_default(),
                            "subject" => template.subject = text,
                            "body" => template.body = text.unwrap_or_default(),
                            _ => {}
                        }
                    }
                    template.version += 1;
                }
            }
            DomainEvent::TemplateDeleted(e) => {
                self.templates.remove(&e.template_id);
            }
            _ => {}
        }
    }
}

/// Why a settings command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsRejection {
    #[error("no such template")]
    TemplateNotFound,
    /// The template is no longer at the version the change was based on.
    #[error("the template changed meanwhile (now at version {actual}); reload and retry")]
    Stale { actual: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// Records the keys whose value changes, each with before and after.
#[must_use]
pub fn change(settings: &Settings, change: SettingsChange) -> Vec<DomainEvent> {
    let changes: Vec<FieldChange> = change
        .0
        .into_iter()
        .filter_map(|(key, after)| {
            let before = settings.value(key);
            (before != after).then(|| FieldChange::new(key.as_str(), before, after))
        })
        .collect();
    if changes.is_empty() {
        vec![]
    } else {
        vec![UserSettingsChanged { changes }.into()]
    }
}

/// A new template, validated: email templates need a subject, text templates have none.
///
/// # Errors
/// [`SettingsRejection::Invalid`] for a subject that does not fit the kind.
pub fn create_template(
    template_id: TemplateId,
    kind: TemplateKind,
    name: TemplateName,
    subject: Option<TemplateSubject>,
    body: TemplateBody,
) -> Result<Vec<DomainEvent>, SettingsRejection> {
    match (kind, &subject) {
        (TemplateKind::Email, None) => {
            return Err(SettingsRejection::Invalid(
                "an email template needs a subject".into(),
            ))
        }
        (TemplateKind::Text, Some(_)) => {
            return Err(SettingsRejection::Invalid(
                "a text template has no subject".into(),
            ))
        }
        _ => {}
    }
    Ok(vec![TemplateCreated {
        template_id,
        kind,
        name: name.into_inner(),
        subject: subject.map(TemplateSubject::into_inner),
        body: body.into_inner(),
    }
    .into()])
}

/// A partial edit of a template.
#[derive(Debug, Clone, Default)]
pub struct TemplateEdit {
    pub name: Option<TemplateName>,
    pub subject: Option<TemplateSubject>,
    pub body: Option<TemplateBody>,
}

/// Records the template's fields that change, each with before and after.
///
/// # Errors
/// [`SettingsRejection::TemplateNotFound`]; [`SettingsRejection::Invalid`] for a
/// subject on a text template.
pub fn update_template(
    settings: &Settings,
    template_id: TemplateId,
    edit: TemplateEdit,
) -> Result<Vec<DomainEvent>, SettingsRejection> {
    let template = settings
        .templates
        .get(&template_id)
        .ok_or(SettingsRejection::TemplateNotFound)?;
    if template.kind == TemplateKind::Text && edit.subject.is_some() {
        return Err(SettingsRejection::Invalid(
            "a text template has no subject".into(),
        ));
    }
    let mut changes = Vec::new();
    if let Some(name) = edit.name.filter(|n| n.as_str() != template.name) {
        changes.push(FieldChange::new(
            "name",
            template.name.as_str(),
            name.as_str(),
        ));
    }
    if let Some(subject) = edit
        .subject
        .filter(|s| Some(s.as_str()) != template.subject.as_deref())
    {
        changes.push(FieldChange::new(
            "subject",
            template.subject.clone(),
            subject.as_str(),
        ));
    }
    if let Some(body) = edit.body.filter(|b| b.as_str() != template.body) {
        changes.push(FieldChange::new(
            "body",
            template.body.as_str(),
            body.as_str(),
        ));
    }
    if changes.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![TemplateUpdated {
        template_id,
        changes,
    }
    .into()])
}

/// Checks that the template is at `expected` (when given: a write's `If-Match`).
///
/// # Errors
/// [`SettingsRejection::TemplateNotFound`], [`SettingsRejection::Stale`].
pub fn expect_template_version(
    settings: &Settings,
    template_id: TemplateId,
    expected: Option<u64>,
) -> Result<(), SettingsRejection> {
    let actual = settings
        .templates
        .get(&template_id)
        .ok_or(SettingsRejection::TemplateNotFound)?
        .version;
    match expected {
        Some(expected) if expected != actual => Err(SettingsRejection::Stale { actual }),
        _ => Ok(()),
    }
}

/// Deletes a template, keeping what it was in the event.
///
/// # Errors
/// [`SettingsRejection::TemplateNotFound`].
pub fn delete_template(
    settings: &Settings,
    template_id: TemplateId,
) -> Result<Vec<DomainEvent>, SettingsRejection> {
    let t = settings
        .templates
        .get(&template_id)
        .ok_or(SettingsRejection::TemplateNotFound)?;
    Ok(vec![TemplateDeleted {
        template_id,
        kind: t.kind,
        name: t.name.clone(),
        subject: t.subject.clone(),
        body: t.body.clone(),
    }
    .into()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn only_known_keys_with_valid_values_are_accepted_and_every_problem_is_named() {
        let errors = SettingsChange::parse(&object(json!({
            "timezone": "Mars/Olympus Mons",
            "notifications.task_reminder_minutes": -5,
            "communication.texting_enabled": "yes",
            "communication.sender_email": "not an email",
            "lead_manager.default_sort": "price",
            "favourite_colour": "blue",
        })))
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields.len(), 6, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.field == "favourite_colour" && e.message == "unknown setting"));

        let ok = SettingsChange::parse(&object(json!({
            "timezone": "America/Denver",
            "email_signature": "Dana — Demo Realty",
            "notifications.new_lead_email": false,
            "notifications.task_reminder_minutes": 15,
            "communication.phone_number": "+1 555 0100",
            "communication.sender_email": "Dana@Demo.example",
            "communication.texting_enabled": true,
            "lead_manager.default_sort": "name",
        })));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_change_records_before_and_after_of_each_changed_key_only() {
        let mut settings = Settings::default();
        let events = change(
            &settings,
            SettingsChange::parse(&object(json!({
                "timezone": "UTC",
                "communication.sender_email": "Dana@Demo.example",
                "notifications.task_reminder_minutes": 45,
            })))
            .unwrap(),
        );
        let DomainEvent::UserSettingsChanged(e) = &events[0] else {
            panic!()
        };
        assert_eq!(
            e.changes,
            [
                FieldChange::new("notifications.task_reminder_minutes", 30, 45),
                FieldChange::new(
                    "communication.sender_email",
                    Value::Null,
                    "dana@demo.example"
                ),
            ]
        );
        settings.apply(&events[0]);
        assert_eq!(settings.value(SettingKey::TaskReminderMinutes), json!(45));
        let again =
            SettingsChange::parse(&object(json!({"notifications.task_reminder_minutes": 45})))
                .unwrap();
        assert_eq!(change(&settings, again), []);
    }

    #[test]
    fn templates_are_created_edited_field_by_field_and_deleted_with_their_content() {
        let mut settings = Settings::default();
        let id = TemplateId::generate();
        let name = |s: &str| TemplateName::parse(s).unwrap();
        let body = |s: &str| TemplateBody::parse(s).unwrap();
        assert!(create_template(id, TemplateKind::Email, name("Intro"), None, body("Hi")).is_err());
        let subject = TemplateSubject::parse("Hello").unwrap();
        assert!(create_template(
            id,
            TemplateKind::Text,
            name("Intro"),
            Some(subject.clone()),
            body("Hi")
        )
        .is_err());
        for e in create_template(
            id,
            TemplateKind::Email,
            name("Intro"),
            Some(subject),
            body("Hi {name}"),
        )
        .unwrap()
        {
            settings.apply(&e);
        }
        let edit = TemplateEdit {
            name: Some(name("Intro")),
            body: Some(body("Hello {name}")),
            ..TemplateEdit::default()
        };
        let events = update_template(&settings, id, edit).unwrap();
        let DomainEvent::TemplateUpdated(e) = &events[0] else {
            panic!()
        };
        assert_eq!(
            e.changes,
            [FieldChange::new("body", "Hi {name}", "Hello {name}")]
        );
        settings.apply(&events[0]);
        assert_eq!(settings.templates[&id].version, 2);
        assert_eq!(
            update_template(&settings, id, TemplateEdit::default()).unwrap(),
            []
        );
        let deleted = delete_template(&settings, id).unwrap();
        let DomainEvent::TemplateDeleted(d) = &deleted[0] else {
            panic!()
        };
        assert_eq!(d.body, "Hello {name}");
        settings.apply(&deleted[0]);
        assert_eq!(
            delete_template(&settings, id),
            Err(SettingsRejection::TemplateNotFound)
        );
    }

    #[test]
    fn an_email_signature_is_at_most_2000_characters() {
        let signature = |n: usize| json!("é".repeat(n));
        assert_eq!(
            SettingKey::EmailSignature.parse_value(&signature(2_000)),
            Ok(signature(2_000))
        );
        assert!(SettingKey::EmailSignature
            .parse_value(&signature(2_001))
            .is_err());
    }

    #[test]
    fn every_key_is_listed_with_its_value_or_its_default() {
        let mut settings = Settings::default();
        let all = settings.all();
        assert_eq!(all.len(), SettingKey::ALL.len());
        for key in SettingKey::ALL {
            assert_eq!(all[key.as_str()], key.default_value(), "{}", key.as_str());
        }
        for e in change(
            &settings,
            SettingsChange::parse(&object(json!({"timezone": "Europe/Paris"}))).unwrap(),
        ) {
            settings.apply(&e);
        }
        assert_eq!(settings.all()["timezone"], json!("Europe/Paris"));
        assert_eq!(
            settings.all()["email_signature"],
            SettingKey::EmailSignature.default_value()
        );
    }

    /// What the fold of an edit holds is what the next edit compares with: a
    /// renamed template renamed to the same name again, or given the subject it
    /// now has, changes nothing.
    #[test]
    fn a_template_edit_is_compared_with_the_template_as_last_edited() {
        let mut settings = Settings::default();
        let id = TemplateId::generate();
        let subject = |s: &str| TemplateSubject::parse(s).unwrap();
        for e in create_template(
            id,
            TemplateKind::Email,
            TemplateName::parse("Intro").unwrap(),
            Some(subject("Hello")),
            TemplateBody::parse("Hi").unwrap(),
        )
        .unwrap()
        {
            settings.apply(&e);
        }
        let edit = || TemplateEdit {
            name: Some(TemplateName::parse("Welcome").unwrap()),
            subject: Some(subject("Welcome!")),
            ..TemplateEdit::default()
        };
        let events = update_template(&settings, id, edit()).unwrap();
        let DomainEvent::TemplateUpdated(e) = &events[0] else {
            panic!()
        };
        assert_eq!(
            e.changes,
            [
                FieldChange::new("name", "Intro", "Welcome"),
                FieldChange::new("subject", "Hello", "Welcome!"),
            ]
        );
        settings.apply(&events[0]);
        assert_eq!(update_template(&settings, id, edit()).unwrap(), []);
        // The same subject on an email template is no change; any subject on a
        // text template is refused.
        let same_subject = TemplateEdit {
            subject: Some(subject("Welcome!")),
            ..TemplateEdit::default()
        };
        assert_eq!(update_template(&settings, id, same_subject).unwrap(), []);
        let text = TemplateId::generate();
        for e in create_template(
            text,
            TemplateKind::Text,
            TemplateName::parse("Ping").unwrap(),
            None,
            TemplateBody::parse("Hi").unwrap(),
        )
        .unwrap()
        {
            settings.apply(&e);
        }
        let with_subject = TemplateEdit {
            subject: Some(subject("Hey")),
            ..TemplateEdit::default()
        };
        assert!(matches!(
            update_template(&settings, text, with_subject),
            Err(SettingsRejection::Invalid(_))
        ));
        let body_only = TemplateEdit {
            body: Some(TemplateBody::parse("Hello").unwrap()),
            ..TemplateEdit::default()
        };
        assert_eq!(
            update_template(&settings, text, body_only).unwrap().len(),
            1
        );
    }

    #[test]
    fn a_template_write_with_a_stale_version_is_refused_with_the_current_one() {
        let mut settings = Settings::default();
        let id = TemplateId::generate();
        assert_eq!(
            expect_template_version(&settings, id, None),
            Err(SettingsRejection::TemplateNotFound)
        );
        for e in create_template(
            id,
            TemplateKind::Text,
            TemplateName::parse("Ping").unwrap(),
            None,
            TemplateBody::parse("Hi").unwrap(),
        )
        .unwrap()
        {
            settings.apply(&e);
        }
        assert_eq!(expect_template_version(&settings, id, None), Ok(()));
        assert_eq!(expect_template_version(&settings, id, Some(1)), Ok(()));
        assert_eq!(
            expect_template_version(&settings, id, Some(2)),
            Err(SettingsRejection::Stale { actual: 1 })
        );
    }
}
