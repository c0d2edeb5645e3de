//! Reverting a "Log in as user" session: each change it made, newest first, is put
//! back where nothing has changed it since, and left alone (a conflict) where
//! something has. Pure: the application loads the session's events and the states
//! they touched, and appends what this decides.

use std::collections::BTreeMap;

use crm_events::catalog::lead::{
    LeadFieldsUpdated, LeadReassigned, LeadStageChanged, LeadTagAdded, LeadTagRemoved,
};
use crm_events::catalog::settings::{
    TemplateCreated, TemplateDeleted, TemplateUpdated, UserSettingsChanged,
};
use crm_events::ids::{LeadId, TemplateId};
use crm_events::{DomainEvent, FieldChange};
use serde_json::{json, Value};
use uuid::Uuid;

use super::lead::Lead;
use super::settings::{SettingKey, Settings, Template};

/// What a revert does with one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Put back: nothing changed it since.
    Revert,
    /// Changed since: left alone.
    Conflict,
    /// The domain has no inverse for it.
    NotRevertible,
}

impl Action {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Revert => "revert",
            Self::Conflict => "conflict",
            Self::NotRevertible => "not_revertible",
        }
    }
}

/// One line of the plan: one change of the session.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The position of the session's event that made the change.
    pub position: i64,
    pub entity_type: &'static str,
    pub entity_id: Uuid,
    pub field: String,
    pub action: Action,
    /// The value now (after the items before this one in the plan).
    pub current: Value,
    /// The value the revert puts back: what it was before the session changed it.
    pub target: Value,
    /// Why it is left alone, for a conflict or a change with no inverse.
    pub why: Option<String>,
}

/// The states a revert works on, as they are now: the leads the session touched and
/// the agent's settings. The plan changes them as it goes, so that a field the
/// session changed twice is put back step by step.
#[derive(Debug, Clone, Default)]
pub struct Desk {
    pub leads: BTreeMap<LeadId, Lead>,
    pub settings: Settings,
}

/// The events that put the changes back, per aggregate, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Undo {
    pub leads: BTreeMap<LeadId, Vec<DomainEvent>>,
    pub settings: Vec<DomainEvent>,
}

impl Undo {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.leads.values().all(Vec::is_empty)
    }
}

/// One event of the session: its position, the stream it is on, the event.
#[derive(Debug, Clone)]
pub struct Made {
    pub position: i64,
    pub stream_id: Uuid,
    pub event: DomainEvent,
}

const NO_INVERSE_RECORD: &str =
    "notes, tasks and contacts record what happened; the domain has no way to take one back";

/// Plans the revert of the session's changes `made` (oldest first) against `desk`,
/// newest first; returns the plan and the events that carry it out (none for a
/// conflict or a change with no inverse).
#[must_use]
pub fn plan(made: &[Made], desk: &mut Desk) -> (Vec<Item>, Undo) {
    let mut items = Vec::new();
    let mut undo = Undo::default();
    for m in made.iter().rev() {
        match &m.event {
            DomainEvent::LeadFieldsUpdated(_)
            | DomainEvent::LeadStageChanged(_)
            | DomainEvent::LeadTagAdded(_)
            | DomainEvent::LeadTagRemoved(_)
            | DomainEvent::LeadReassigned(_)
            | DomainEvent::LeadCreated(_)
            | DomainEvent::LeadNoteAdded(_)
            | DomainEvent::LeadTaskCreated(_)
            | DomainEvent::LeadTaskCompleted(_)
            | DomainEvent::LeadCommunicationLogged(_)
            | DomainEvent::LeadArchived(_) => {
                let id = LeadId::from_uuid(m.stream_id);
                let events = lead_undo(m, desk.leads.get(&id), &mut items);
                if let Some(lead) = desk.leads.get_mut(&id) {
                    for event in &events {
                        lead.apply(event);
                    }
                }
                undo.leads.entry(id).or_default().extend(events);
            }
            DomainEvent::UserSettingsChanged(_)
            | DomainEvent::TemplateCreated(_)
            | DomainEvent::TemplateUpdated(_)
            | DomainEvent::TemplateDeleted(_) => {
                let events = settings_undo(m, &desk.settings, &mut items);
                for event in &events {
                    desk.settings.apply(event);
                }
                undo.settings.extend(events);
            }
            // Starts, ends and views change nothing of the agent's account.
            _ => {}
        }
    }
    (items, undo)
}

/// A lead's field as the plan compares it.
fn lead_field(lead: &Lead, field: &str) -> Value {
    match field {
        "name" => json!(lead.name),
        "email" => json!(lead.email),
        "phone" => json!(lead.phone),
        "source" => json!(lead.source),
        "stage" => json!(lead.stage),
        "assigned_agent_id" => json!(lead.assigned_agent_id),
        _ => Value::Null,
    }
}

/// The plan's items for one change of a lead, and the events that undo what can be.
fn lead_undo(m: &Made, lead: Option<&Lead>, items: &mut Vec<Item>) -> Vec<DomainEvent> {
    let mut item =
        |field: &str, action: Action, current: Value, target: Value, why: Option<&str>| {
            items.push(Item {
                position: m.position,
                entity_type: "lead",
                entity_id: m.stream_id,
                field: field.to_owned(),
                action,
                current,
                target,
                why: why.map(str::to_owned),
            });
        };
    let no_inverse = match &m.event {
        DomainEvent::LeadCreated(_) => Some((
            "created",
            "a lead created stays in the log; archive it if it should go",
        )),
        DomainEvent::LeadNoteAdded(_) => Some(("note", NO_INVERSE_RECORD)),
        DomainEvent::LeadTaskCreated(_) | DomainEvent::LeadTaskCompleted(_) => {
            Some(("task", NO_INVERSE_RECORD))
        }
        DomainEvent::LeadCommunicationLogged(_) => Some(("communication", NO_INVERSE_RECORD)),
        DomainEvent::LeadArchived(_) => Some((
            "archived",
            "an archived lead cannot be brought back to the Lead Manager",
        )),
        _ => None,
    };
    if let Some((field, why)) = no_inverse {
        item(
            field,
            Action::NotRevertible,
            Value::Null,
            Value::Null,
            Some(why),
        );
        return vec![];
    }
    // The field changes this event made: (field, what the session left, what was
    // there before).
    let changes: Vec<(String, Value, Value)> = match &m.event {
        DomainEvent::LeadFieldsUpdated(u) => u
            .changes
            .iter()
            .map(|c| (c.field.clone(), c.after.clone(), c.before.clone()))
            .collect(),
        DomainEvent::LeadStageChanged(s) => vec![("stage".into(), json!(s.to), json!(s.from))],
        DomainEvent::LeadReassigned(r) => {
            vec![("assigned_agent_id".into(), json!(r.to), json!(r.from))]
        }
        DomainEvent::LeadTagAdded(t) => vec![("tag".into(), json!(t.tag), Value::Null)],
        DomainEvent::LeadTagRemoved(t) => vec![("tag".into(), Value::Null, json!(t.tag))],
        _ => vec![],
    };
    let Some(lead) = lead.filter(|l| !l.archived && !l.erased) else {
        let why = match lead {
            Some(l) if l.erased => "the lead's personal data was erased since",
            Some(_) => "the lead was archived since",
            None => "the lead is gone",
        };
        for (field, left, before) in changes {
            item(&field, Action::Conflict, left, before, Some(why));
        }
        return vec![];
    };
    let mut events = Vec::new();
    let mut fields = Vec::new();
    for (field, left, before) in changes {
        if field == "tag" {
            // Added: still there, take it off; removed: still off, put it back.
            let (tag, added) = match (&left, &before) {
                (Value::String(tag), _) => (tag.clone(), true),
                (_, Value::String(tag)) => (tag.clone(), false),
                _ => continue,
            };
            let has = lead.tags.contains(&tag);
            let current = if has { json!(tag) } else { Value::Null };
            if has == added {
                item("tag", Action::Revert, current, before.clone(), None);
                events.push(if added {
                    LeadTagRemoved { tag }.into()
                } else {
                    LeadTagAdded { tag }.into()
                });
            } else {
                item(
                    "tag",
                    Action::Conflict,
                    current,
                    before.clone(),
                    Some("changed since"),
                );
            }
            continue;
        }
        let current = lead_field(lead, &field);
        if current != left {
            item(
                &field,
                Action::Conflict,
                current,
                before,
                Some("changed since"),
            );
            continue;
        }
        match field.as_str() {
            "stage" => match (
                serde_json::from_value(left.clone()),
                serde_json::from_value(before.clone()),
            ) {
                (Ok(from), Ok(to)) => {
                    item(&field, Action::Revert, current, before, None);
                    events.push(LeadStageChanged { from, to }.into());
                }
                _ => item(
                    &field,
                    Action::NotRevertible,
                    current,
                    before,
                    Some("not a stage"),
                ),
            },
            "assigned_agent_id" => match serde_json::from_value(before.clone()) {
                Ok(Some(to)) => {
                    item(&field, Action::Revert, current, before, None);
                    events.push(
                        LeadReassigned {
                            from: serde_json::from_value(left).unwrap_or(None),
                            to,
                        }
                        .into(),
                    );
                }
                _ => item(
                    &field,
                    Action::NotRevertible,
                    current,
                    before,
                    Some("a lead is never unassigned"),
                ),
            },
            _ => {
                item(
                    &field,
                    Action::Revert,
                    current.clone(),
                    before.clone(),
                    None,
                );
                fields.push(FieldChange::new(field, current, before));
            }
        }
    }
    if !fields.is_empty() {
        events.insert(0, LeadFieldsUpdated { changes: fields }.into());
    }
    events
}

/// A template's field as the plan compares it.
fn template_field(template: &Template, field: &str) -> Value {
    match field {
        "kind" => json!(template.kind),
        "name" => json!(template.name),
        "subject" => json!(template.subject),
        "body" => json!(template.body),
        _ => Value::Null,
    }
}

/// The plan's items for one change of the settings or templates, and the events that
/// undo what can be.
fn settings_undo(m: &Made, settings: &Settings, items: &mut Vec<Item>) -> Vec<DomainEvent> {
    let mut item = |entity_type: &'static str,
                    entity_id: Uuid,
                    field: &str,
                    action: Action,
                    current: Value,
                    target: Value| {
        let why = match action {
            Action::Conflict => Some("changed since".to_owned()),
            _ => None,
        };
        items.push(Item {
            position: m.position,
            entity_type,
            entity_id,
            field: field.to_owned(),
            action,
            current,
            target,
            why,
        });
    };
    let verdict = |same: bool| {
        if same {
            Action::Revert
        } else {
            Action::Conflict
        }
    };
    match &m.event {
        DomainEvent::UserSettingsChanged(c) => {
            let back = fields_back(
                &c.changes,
                |field| SettingKey::parse(field).map_or(Value::Null, |key| settings.value(key)),
                |field, action, current, target| {
                    item("settings", m.stream_id, field, action, current, target);
                },
            );
            if back.is_empty() {
                vec![]
            } else {
                vec![UserSettingsChanged { changes: back }.into()]
            }
        }
        DomainEvent::TemplateCreated(t) => {
            let now = settings.templates.get(&t.template_id);
            let made = Template {
                kind: t.kind,
                name: t.name.clone(),
                subject: t.subject.clone(),
                body: t.body.clone(),
                version: 1,
            };
            let unchanged = now.is_some_and(|n| same_template(n, &made));
            let action = verdict(unchanged);
            item(
                "template",
                t.template_id.as_uuid(),
                "created",
                action,
                now.map_or(Value::Null, template_json),
                Value::Null,
            );
            match (unchanged, now) {
                (true, Some(n)) => vec![deleted(t.template_id, n)],
                _ => vec![],
            }
        }
        DomainEvent::TemplateUpdated(t) => {
            let Some(now) = settings.templates.get(&t.template_id) else {
                for change in &t.changes {
                    item(
                        "template",
                        t.template_id.as_uuid(),
                        &change.field,
                        Action::Conflict,
                        Value::Null,
                        change.before.clone(),
                    );
                }
                return vec![];
            };
            let back = fields_back(
                &t.changes,
                |field| template_field(now, field),
                |field, action, current, target| {
                    item(
                        "template",
                        t.template_id.as_uuid(),
                        field,
                        action,
                        current,
                        target,
                    );
                },
            );
            if back.is_empty() {
                vec![]
            } else {
                vec![TemplateUpdated {
                    template_id: t.template_id,
                    changes: back,
                }
                .into()]
            }
        }
        DomainEvent::TemplateDeleted(t) => {
            let now = settings.templates.get(&t.template_id);
            let gone = now.is_none();
            let was = Template {
                kind: t.kind,
                name: t.name.clone(),
                subject: t.subject.clone(),
                body: t.body.clone(),
                version: 1,
            };
            item(
                "template",
                t.template_id.as_uuid(),
                "deleted",
                verdict(gone),
                now.map_or(Value::Null, template_json),
                template_json(&was),
            );
            if gone {
                vec![TemplateCreated {
                    template_id: t.template_id,
                    kind: t.kind,
                    name: t.name.clone(),
                    subject: t.subject.clone(),
                    body: t.body.clone(),
                }
                .into()]
            } else {
                vec![]
            }
        }
        _ => vec![],
    }
}

/// The field changes whose value is still what they left, undone (each said to
/// `say` as put back or, changed since, left alone).
fn fields_back(
    changes: &[FieldChange],
    current_of: impl Fn(&str) -> Value,
    mut say: impl FnMut(&str, Action, Value, Value),
) -> Vec<FieldChange> {
    let mut back = Vec::new();
    for change in changes {
        let current = current_of(&change.field);
        if current == change.after {
            say(
                &change.field,
                Action::Revert,
                current.clone(),
                change.before.clone(),
            );
            back.push(FieldChange::new(
                change.field.clone(),
                current,
                change.before.clone(),
            ));
        } else {
            say(
                &change.field,
                Action::Conflict,
                current,
                change.before.clone(),
            );
        }
    }
    back
}

fn same_template(a: &Template, b: &Template) -> bool {
    (a.kind, &a.name, &a.subject, &a.body) == (b.kind, &b.name, &b.subject, &b.body)
}

fn template_json(t: &Template) -> Value {
    json!({"kind": t.kind, "name": t.name, "subject": t.subject, "body": t.body})
}

fn deleted(template_id: TemplateId, t: &Template) -> DomainEvent {
    TemplateDeleted {
        template_id,
        kind: t.kind,
        name: t.name.clone(),
        subject: t.subject.clone(),
        body: t.body.clone(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_events::catalog::lead::{LeadCreated, LeadNoteAdded};
    use crm_events::catalog::values::Stage;
    use crm_events::ids::{NoteId, SiteId};

    fn lead() -> Lead {
        Lead::created(
            SiteId::generate(),
            &LeadCreated {
                name: "Dana Novak".into(),
                email: None,
                phone: Some("+1 555 0100".into()),
                source: None,
                stage: Stage::New,
                tags: vec![],
                assigned_agent_id: None,
            },
        )
    }

    fn made(position: i64, lead: LeadId, event: impl Into<DomainEvent>) -> Made {
        Made {
            position,
            stream_id: lead.as_uuid(),
            event: event.into(),
        }
    }

    fn stage(from: Stage, to: Stage) -> LeadStageChanged {
        LeadStageChanged { from, to }
    }

    /// A stage moved twice in the session goes back step by step, newest first.
    #[test]
    fn a_field_changed_twice_goes_back_step_by_step() {
        let id = LeadId::generate();
        let mut now = lead();
        for e in [
            stage(Stage::New, Stage::Contacted),
            stage(Stage::Contacted, Stage::Nurture),
        ] {
            now.apply(&e.into());
        }
        let mut desk = Desk::default();
        desk.leads.insert(id, now);
        let session = [
            made(10, id, stage(Stage::New, Stage::Contacted)),
            made(11, id, stage(Stage::Contacted, Stage::Nurture)),
        ];
        let (items, undo) = plan(&session, &mut desk);
        let steps: Vec<(i64, Action, Value, Value)> = items
            .iter()
            .map(|i| (i.position, i.action, i.current.clone(), i.target.clone()))
            .collect();
        assert_eq!(
            steps,
            [
                (11, Action::Revert, json!("nurture"), json!("contacted")),
                (10, Action::Revert, json!("contacted"), json!("new")),
            ]
        );
        assert_eq!(
            undo.leads[&id],
            [
                stage(Stage::Nurture, Stage::Contacted).into(),
                stage(Stage::Contacted, Stage::New).into(),
            ]
        );
        assert_eq!(desk.leads[&id].stage, Stage::New);
    }

    /// Changed since the session: left alone; a note: no inverse; a lead archived
    /// since: every change of it is a conflict.
    #[test]
    fn changes_since_records_and_archived_leads_are_left_alone() {
        let (id, archived) = (LeadId::generate(), LeadId::generate());
        let mut edited = lead();
        edited.apply(&stage(Stage::New, Stage::Contacted).into());
        edited.apply(&stage(Stage::Contacted, Stage::Nurture).into());
        let mut gone = lead();
        gone.apply(&stage(Stage::New, Stage::Contacted).into());
        gone.apply(&crm_events::catalog::lead::LeadArchived {}.into());
        let mut desk = Desk::default();
        desk.leads.insert(id, edited);
        desk.leads.insert(archived, gone);
        let note = LeadNoteAdded {
            note_id: NoteId::generate(),
            body: "Called".into(),
        };
        let session = [
            made(1, id, stage(Stage::New, Stage::Contacted)),
            made(2, id, note),
            made(3, archived, stage(Stage::New, Stage::Contacted)),
        ];
        let (items, undo) = plan(&session, &mut desk);
        let verdicts: Vec<(i64, Action)> = items.iter().map(|i| (i.position, i.action)).collect();
        assert_eq!(
            verdicts,
            [
                (3, Action::Conflict),
                (2, Action::NotRevertible),
                (1, Action::Conflict),
            ]
        );
        assert_eq!(items[0].why.as_deref(), Some("the lead was archived since"));
        assert!(undo.is_empty());
    }
}
