//! The lead aggregate: its state folded from its events, and the decisions the Lead
//! Manager's commands make on it. Pure: state + command -> events or a rejection.
//! A command that changes nothing decides no events.

use std::collections::BTreeMap;

use crm_events::catalog::lead::*;
use crm_events::catalog::values::{Channel, Direction, Stage};
use crm_events::ids::{CommunicationId, NoteId, SiteId, TaskId, UserId};
use crm_events::{DomainEvent, FieldChange};
use serde_json::Value;

use super::values::{
    DueAt, Email, LeadSource, NoteBody, PersonName, Phone, Reason, Summary, Tags, TaskTitle,
};

/// A lead as its events leave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub site_id: SiteId,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub source: Option<String>,
    pub stage: Stage,
    pub tags: Vec<String>,
    pub assigned_agent_id: Option<UserId>,
    pub archived: bool,
    /// Its personal data was erased: nothing more is recorded of it.
    pub erased: bool,
    /// Every task, with whether it is completed.
    pub tasks: BTreeMap<TaskId, bool>,
}

impl Lead {
    /// The lead created by `created`, on `site`.
    #[must_use]
    pub fn created(site_id: SiteId, created: &LeadCreated) -> Self {
        Self {
            site_id,
            name: created.name.clone(),
            email: created.email.clone(),
            phone: created.phone.clone(),
            source: created.source.clone(),
            stage: created.stage,
            tags: created.tags.clone(),
            assigned_agent_id: created.assigned_agent_id,
            archived: false,
            erased: false,
            tasks: BTreeMap::new(),
        }
    }

    /// Folds one later event into the state. Events of other aggregates are ignored.
    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::LeadFieldsUpdated(e) => {
                for change in &e.changes {
                    let text = change.after.as_str().map(str::to_owned);
                    match change.field.as_str() {
                        "name" => self.name = text.unwrap_or_default(),
                        "email" => self.email = text,
                        "phone" => self.phone = text,
                        "source" => self.source = text,
                        _ => {}
                    }
                }
            }
            DomainEvent::LeadStageChanged(e) => self.stage = e.to,
            DomainEvent::LeadReassigned(e) => self.assigned_agent_id = Some(e.to),
            DomainEvent::LeadTagAdded(e) if !self.tags.contains(&e.tag) => {
                self.tags.push(e.tag.clone());
            }
            DomainEvent::LeadTagRemoved(e) => self.tags.retain(|t| *t != e.tag),
            DomainEvent::LeadTaskCreated(e) => {
                self.tasks.insert(e.task_id, false);
            }
            DomainEvent::LeadTaskCompleted(e) => {
                self.tasks.insert(e.task_id, true);
            }
            DomainEvent::LeadArchived(_) => self.archived = true,
            DomainEvent::LeadErased(_) => {
                self.erased = true;
                self.name = crm_events::vault::ERASED.to_owned();
                self.email = None;
                self.phone = None;
            }
            _ => {}
        }
    }
}

/// Why a lead command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeadRejection {
    /// The lead is archived: it is gone from the Lead Manager.
    #[error("the lead is archived")]
    Archived,
    #[error("no such task on this lead")]
    TaskNotFound,
    /// The lead's personal data was erased: nothing more is recorded of it.
    #[error("the lead was erased")]
    Erased,
}

/// A new lead, validated.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub name: PersonName,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub source: Option<LeadSource>,
    pub stage: Stage,
    pub tags: Tags,
    pub assigned_agent_id: Option<UserId>,
}

/// Creating a lead records everything about it.
#[must_use]
pub fn create(new: NewLead) -> Vec<DomainEvent> {
    vec![LeadCreated {
        name: new.name.into_inner(),
        email: new.email.map(|e| e.as_str().to_owned()),
        phone: new.phone.map(|p| p.as_str().to_owned()),
        source: new.source.map(LeadSource::into_inner),
        stage: new.stage,
        tags: new.tags.to_strings(),
        assigned_agent_id: new.assigned_agent_id,
    }
    .into()]
}

/// A partial edit of a lead, validated: `None` leaves a field alone; for the
/// optional fields `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct LeadEdit {
    pub name: Option<PersonName>,
    pub email: Option<Option<Email>>,
    pub phone: Option<Option<Phone>>,
    pub source: Option<Option<LeadSource>>,
    pub stage: Option<Stage>,
    pub tags: Option<Tags>,
}

/// Decides an edit: contact fields that change become one `LeadFieldsUpdated` with a
/// diff per field; a new stage a `LeadStageChanged`; the tag set's difference one
/// `LeadTagAdded` / `LeadTagRemoved` per tag.
///
/// # Errors
/// [`LeadRejection::Archived`].
pub fn edit(lead: &Lead, edit: LeadEdit) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    let mut changes = Vec::new();
    let mut diff = |field: &str, before: Option<&str>, after: Option<&str>| {
        if before != after {
            changes.push(FieldChange::new(field, text(before), text(after)));
        }
    };
    if let Some(name) = &edit.name {
        diff("name", Some(&lead.name), Some(name.as_str()));
    }
    if let Some(email) = &edit.email {
        diff(
            "email",
            lead.email.as_deref(),
            email.as_ref().map(Email::as_str),
        );
    }
    if let Some(phone) = &edit.phone {
        diff(
            "phone",
            lead.phone.as_deref(),
            phone.as_ref().map(Phone::as_str),
        );
    }
    if let Some(source) = &edit.source {
        diff(
            "source",
            lead.source.as_deref(),
            source.as_ref().map(LeadSource::as_str),
        );
    }
    let mut events: Vec<DomainEvent> = Vec::new();
    if !changes.is_empty() {
        events.push(LeadFieldsUpdated { changes }.into());
    }
    if let Some(stage) = edit.stage.filter(|s| *s != lead.stage) {
        events.push(
            LeadStageChanged {
                from: lead.stage,
                to: stage,
            }
            .into(),
        );
    }
    if let Some(tags) = edit.tags {
        let wanted = tags.to_strings();
        for tag in lead.tags.iter().filter(|t| !wanted.contains(t)) {
            events.push(LeadTagRemoved { tag: tag.clone() }.into());
        }
        for tag in wanted.iter().filter(|t| !lead.tags.contains(t)) {
            events.push(LeadTagAdded { tag: tag.clone() }.into());
        }
    }
    Ok(events)
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

/// Assigns the lead to `agent` (nothing when it already is).
///
/// # Errors
/// [`LeadRejection::Archived`].
pub fn assign(lead: &Lead, agent: UserId) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    if lead.assigned_agent_id == Some(agent) {
        return Ok(vec![]);
    }
    Ok(vec![LeadReassigned {
        from: lead.assigned_agent_id,
        to: agent,
    }
    .into()])
}

/// Adds a note.
///
/// # Errors
/// [`LeadRejection::Archived`].
pub fn add_note(
    lead: &Lead,
    note_id: NoteId,
    body: NoteBody,
) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    Ok(vec![LeadNoteAdded {
        note_id,
        body: body.into_inner(),
    }
    .into()])
}

/// Creates a follow-up task.
///
/// # Errors
/// [`LeadRejection::Archived`].
pub fn create_task(
    lead: &Lead,
    task_id: TaskId,
    title: TaskTitle,
    due_at: DueAt,
) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    Ok(vec![LeadTaskCreated {
        task_id,
        title: title.into_inner(),
        due_at: due_at.get(),
    }
    .into()])
}

/// Completes a task (nothing when it already is).
///
/// # Errors
/// [`LeadRejection::Archived`], [`LeadRejection::TaskNotFound`].
pub fn complete_task(lead: &Lead, task_id: TaskId) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    match lead.tasks.get(&task_id) {
        None => Err(LeadRejection::TaskNotFound),
        Some(true) => Ok(vec![]),
        Some(false) => Ok(vec![LeadTaskCompleted { task_id }.into()]),
    }
}

/// Logs a call, email or text.
///
/// # Errors
/// [`LeadRejection::Archived`].
pub fn log_communication(
    lead: &Lead,
    communication_id: CommunicationId,
    channel: Channel,
    direction: Direction,
    summary: Summary,
) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    Ok(vec![LeadCommunicationLogged {
        communication_id,
        channel,
        direction,
        summary: summary.into_inner(),
    }
    .into()])
}

/// Archives the lead.
///
/// # Errors
/// [`LeadRejection::Archived`] when it already is.
pub fn archive(lead: &Lead) -> Result<Vec<DomainEvent>, LeadRejection> {
    live(lead)?;
    Ok(vec![LeadArchived {}.into()])
}

/// Erases the lead's personal data, archived or not; erasing it again records
/// nothing.
#[must_use]
pub fn erase(lead: &Lead, reason: Reason) -> Vec<DomainEvent> {
    if lead.erased {
        return Vec::new();
    }
    vec![LeadErased {
        reason: reason.into_inner(),
    }
    .into()]
}

fn live(lead: &Lead) -> Result<(), LeadRejection> {
    if lead.erased {
        Err(LeadRejection::Erased)
    } else if lead.archived {
        Err(LeadRejection::Archived)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lead() -> Lead {
        let events = create(NewLead {
            name: PersonName::parse("Dana Whitfield").unwrap(),
            email: Some(Email::parse("dana@example.com").unwrap()),
            phone: None,
            source: Some(LeadSource::parse("zillow").unwrap()),
            stage: Stage::New,
            tags: Tags::parse(&["buyer", "vip"]).unwrap(),
            assigned_agent_id: Some(UserId::generate()),
        });
        let DomainEvent::LeadCreated(created) = &events[0] else {
            panic!()
        };
        Lead::created(SiteId::generate(), created)
    }

    fn applied(mut lead: Lead, events: &[DomainEvent]) -> Lead {
        for e in events {
            lead.apply(e);
        }
        lead
    }

    #[test]
    fn an_edit_records_each_changed_field_with_before_and_after() {
        let lead = lead();
        let events = edit(
            &lead,
            LeadEdit {
                name: Some(PersonName::parse("Dana W. Whitfield").unwrap()),
                email: Some(None),
                phone: Some(Some(Phone::parse("+1 555 0100").unwrap())),
                source: Some(Some(LeadSource::parse("zillow").unwrap())),
                stage: Some(Stage::Contacted),
                tags: Some(Tags::parse(&["vip", "seller"]).unwrap()),
            },
        )
        .unwrap();
        let DomainEvent::LeadFieldsUpdated(update) = &events[0] else {
            panic!("{events:?}")
        };
        let diffs: Vec<_> = update
            .changes
            .iter()
            .map(|c| (c.field.as_str(), c.before.clone(), c.after.clone()))
            .collect();
        assert_eq!(
            diffs,
            [
                ("name", json!("Dana Whitfield"), json!("Dana W. Whitfield")),
                ("email", json!("dana@example.com"), json!(null)),
                ("phone", json!(null), json!("+1 555 0100")),
            ],
            "source did not change, so it is not recorded"
        );
        assert_eq!(
            events[1],
            LeadStageChanged {
                from: Stage::New,
                to: Stage::Contacted
            }
            .into()
        );
        assert_eq!(
            events[2],
            LeadTagRemoved {
                tag: "buyer".into()
            }
            .into()
        );
        assert_eq!(
            events[3],
            LeadTagAdded {
                tag: "seller".into()
            }
            .into()
        );
        assert_eq!(events.len(), 4);

        let after = applied(lead, &events);
        assert_eq!(after.name, "Dana W. Whitfield");
        assert_eq!(after.email, None);
        assert_eq!(after.phone.as_deref(), Some("+1 555 0100"));
        assert_eq!(after.stage, Stage::Contacted);
        assert_eq!(after.tags, ["vip", "seller"]);
    }

    #[test]
    fn an_edit_that_changes_nothing_decides_no_events() {
        let lead = lead();
        let same = LeadEdit {
            name: Some(PersonName::parse(" Dana Whitfield ").unwrap()),
            email: Some(Some(Email::parse("DANA@example.com").unwrap())),
            stage: Some(Stage::New),
            tags: Some(Tags::parse(&["buyer", "vip"]).unwrap()),
            ..LeadEdit::default()
        };
        assert_eq!(edit(&lead, same).unwrap(), []);
        assert_eq!(assign(&lead, lead.assigned_agent_id.unwrap()).unwrap(), []);
    }

    #[test]
    fn tasks_complete_once_and_unknown_tasks_are_refused() {
        let lead = lead();
        let task = TaskId::generate();
        let created = create_task(
            &lead,
            task,
            TaskTitle::parse("Call back").unwrap(),
            DueAt::parse("2026-12-01T10:00:00Z").unwrap(),
        )
        .unwrap();
        let lead = applied(lead, &created);
        let done = complete_task(&lead, task).unwrap();
        assert_eq!(done, [LeadTaskCompleted { task_id: task }.into()]);
        let lead = applied(lead, &done);
        assert_eq!(complete_task(&lead, task).unwrap(), []);
        assert_eq!(
            complete_task(&lead, TaskId::generate()),
            Err(LeadRejection::TaskNotFound)
        );
    }

    #[test]
    fn an_archived_lead_takes_no_more_commands() {
        let lead = lead();
        let archived = applied(lead.clone(), &archive(&lead).unwrap());
        assert_eq!(archive(&archived), Err(LeadRejection::Archived));
        assert_eq!(
            edit(&archived, LeadEdit::default()),
            Err(LeadRejection::Archived)
        );
        assert_eq!(
            add_note(&archived, NoteId::generate(), NoteBody::parse("x").unwrap()),
            Err(LeadRejection::Archived)
        );
        assert_eq!(
            assign(&archived, UserId::generate()),
            Err(LeadRejection::Archived)
        );
    }

    #[test]
    fn an_erased_lead_takes_nothing_more_and_erasing_it_again_decides_nothing() {
        let lead = lead();
        let archived = applied(lead.clone(), &archive(&lead).unwrap());
        let why = || Reason::parse("asked to be forgotten").unwrap();
        // Archived or not, a lead can be erased; once.
        let events = erase(&archived, why());
        assert_eq!(
            events,
            [LeadErased {
                reason: "asked to be forgotten".into()
            }
            .into()]
        );
        let erased = applied(archived, &events);
        assert!(erased.erased && erased.email.is_none());
        assert_eq!(erase(&erased, why()), Vec::<DomainEvent>::new());
        let erased = applied(lead.clone(), &erase(&lead, why()));
        assert_eq!(
            edit(&erased, LeadEdit::default()),
            Err(LeadRejection::Erased)
        );
        assert_eq!(
            add_note(&erased, NoteId::generate(), NoteBody::parse("x").unwrap()),
            Err(LeadRejection::Erased)
        );
        assert_eq!(archive(&erased), Err(LeadRejection::Erased));
        assert_eq!(
            assign(&erased, UserId::generate()),
            Err(LeadRejection::Erased)
        );
    }

    #[test]
    fn reassigning_records_from_and_to() {
        let lead = lead();
        let to = UserId::generate();
        let events = assign(&lead, to).unwrap();
        assert_eq!(
            events,
            [LeadReassigned {
                from: lead.assigned_agent_id,
                to
            }
            .into()]
        );
        assert_eq!(applied(lead, &events).assigned_agent_id, Some(to));
    }

    /// A changed source is what the next edit compares with; a tag the log adds
    /// again (an event written twice by an import, say) is held once.
    #[test]
    fn the_fold_keeps_the_source_as_changed_and_each_tag_once() {
        let source = |s: &str| Some(Some(LeadSource::parse(s).unwrap()));
        let to_referral = LeadEdit {
            source: source("referral"),
            ..LeadEdit::default()
        };
        let events = edit(&lead(), to_referral.clone()).unwrap();
        let lead = applied(lead(), &events);
        assert_eq!(lead.source.as_deref(), Some("referral"));
        assert_eq!(edit(&lead, to_referral).unwrap(), []);

        let again = LeadTagAdded { tag: "vip".into() }.into();
        let lead = applied(lead, &[again]);
        assert_eq!(lead.tags, ["buyer", "vip"]);
    }

    #[test]
    fn a_communication_is_logged_as_given_and_never_on_an_archived_lead() {
        let id = CommunicationId::generate();
        let summary = || Summary::parse("Left a message").unwrap();
        let events =
            log_communication(&lead(), id, Channel::Call, Direction::Outbound, summary()).unwrap();
        assert_eq!(
            events,
            [DomainEvent::from(LeadCommunicationLogged {
                communication_id: id,
                channel: Channel::Call,
                direction: Direction::Outbound,
                summary: "Left a message".into(),
            })]
        );
        let archived = applied(lead(), &archive(&lead()).unwrap());
        assert_eq!(
            log_communication(&archived, id, Channel::Text, Direction::Inbound, summary()),
            Err(LeadRejection::Archived)
        );
    }
}
