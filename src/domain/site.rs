//! The site aggregate: a brokerage and its impersonation settings.

use crm_events::catalog::site::*;
use crm_events::{DomainEvent, FieldChange};
use serde_json::json;

use super::policy::ImpersonationRules;
use super::values::SiteName;

/// A site as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub rules: ImpersonationRules,
}

impl Site {
    #[must_use]
    pub fn created(created: &SiteCreated) -> Self {
        Self {
            name: created.name.clone(),
            rules: ImpersonationRules::default(),
        }
    }

    pub fn apply(&mut self, event: &DomainEvent) {
        if let DomainEvent::SiteSettingsChanged(e) = event {
            for change in &e.changes {
                let after = &change.after;
                match change.field.as_str() {
                    "impersonation_enabled" => self.rules.enabled = after.as_bool().unwrap_or(true),
                    "impersonation_max_minutes" => {
                        self.rules.max_minutes = after
                            .as_u64()
                            .and_then(|m| u32::try_from(m).ok())
                            .unwrap_or(60);
                    }
                    "impersonation_reason_required" => {
                        self.rules.reason_required = after.as_bool().unwrap_or(true);
                    }
                    "notify_subject_on_impersonation" => {
                        self.rules.notify_subject = after.as_bool().unwrap_or(false);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Creating a site.
#[must_use]
pub fn create(name: SiteName) -> Vec<DomainEvent> {
    vec![SiteCreated {
        name: name.into_inner(),
    }
    .into()]
}

/// The longest impersonation session a site may allow, in minutes (one day).
pub const MAX_IMPERSONATION_MINUTES: u32 = 1_440;

/// A partial change of the site's settings; `max_minutes` is checked on parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteSettingsEdit {
    pub enabled: Option<bool>,
    pub max_minutes: Option<u32>,
    pub reason_required: Option<bool>,
    pub notify_subject: Option<bool>,
}

impl SiteSettingsEdit {
    /// Checks the maximum duration (1 to 1440 minutes).
    ///
    /// # Errors
    /// A message for an out-of-range duration.
    pub fn validate(self) -> Result<Self, String> {
        match self.max_minutes {
            Some(m) if !(1..=MAX_IMPERSONATION_MINUTES).contains(&m) => Err(format!(
                "impersonation_max_minutes must be 1 to {MAX_IMPERSONATION_MINUTES}"
            )),
            _ => Ok(self),
        }
    }
}

/// Records each setting that changes, with before and after.
#[must_use]
pub fn change_settings(site: &Site, edit: SiteSettingsEdit) -> Vec<DomainEvent> {
    let now = site.rules;
    let mut changes = Vec::new();
    let mut flag = |field: &str, before: bool, after: Option<bool>| {
        if let Some(after) = after.filter(|a| *a != before) {
            changes.push(FieldChange::new(field, before, after));
        }
    };
    flag("impersonation_enabled", now.enabled, edit.enabled);
    flag(
        "impersonation_reason_required",
        now.reason_required,
        edit.reason_required,
    );
    flag(
        "notify_subject_on_impersonation",
        now.notify_subject,
        edit.notify_subject,
    );
    if let Some(after) = edit.max_minutes.filter(|m| *m != now.max_minutes) {
        changes.push(FieldChange::new(
            "impersonation_max_minutes",
            json!(now.max_minutes),
            json!(after),
        ));
    }
    if changes.is_empty() {
        vec![]
    } else {
        vec![SiteSettingsChanged { changes }.into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_site_has_the_designed_defaults_and_changes_are_diffed() {
        let events = create(SiteName::parse("Demo Realty").unwrap());
        let DomainEvent::SiteCreated(created) = &events[0] else {
            panic!()
        };
        let mut site = Site::created(created);
        assert_eq!(
            site.rules,
            ImpersonationRules {
                enabled: true,
                max_minutes: 60,
                reason_required: true,
                notify_subject: false
            }
        );
        let edit = SiteSettingsEdit {
            enabled: Some(true),
            max_minutes: Some(30),
            notify_subject: Some(true),
            ..Default::default()
        };
        let events = change_settings(&site, edit);
        let DomainEvent::SiteSettingsChanged(e) = &events[0] else {
            panic!()
        };
        assert_eq!(
            e.changes,
            [
                FieldChange::new("notify_subject_on_impersonation", false, true),
                FieldChange::new("impersonation_max_minutes", 60, 30),
            ]
        );
        site.apply(&events[0]);
        assert_eq!(
            (site.rules.max_minutes, site.rules.notify_subject),
            (30, true)
        );
        assert_eq!(change_settings(&site, edit), []);
        assert!(SiteSettingsEdit {
            max_minutes: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SiteSettingsEdit {
            max_minutes: Some(1441),
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn every_rule_folds_from_its_change_and_any_duration_in_range_is_accepted() {
        let mut site = Site::created(&SiteCreated {
            name: "Demo Realty".into(),
        });
        let edit = SiteSettingsEdit {
            enabled: Some(false),
            max_minutes: Some(MAX_IMPERSONATION_MINUTES),
            reason_required: Some(false),
            notify_subject: Some(true),
        };
        for event in change_settings(&site, edit.validate().unwrap()) {
            site.apply(&event);
        }
        assert_eq!(
            site.rules,
            ImpersonationRules {
                enabled: false,
                max_minutes: MAX_IMPERSONATION_MINUTES,
                reason_required: false,
                notify_subject: true
            }
        );
        assert_eq!(change_settings(&site, edit), []);
        for minutes in [None, Some(1), Some(60)] {
            let edit = SiteSettingsEdit {
                max_minutes: minutes,
                ..Default::default()
            };
            assert_eq!(edit.validate(), Ok(edit));
        }
    }
}
