//! The authorization policy: who may do what, as pure functions of the people
//! involved. One place decides; every command and every read asks it.
//!
//! While impersonating, a request acts with exactly the subject's permissions (it
//! mirrors the agent's experience), except for the actions DESIGN.md reserves to the
//! real human, which are refused with `impersonation_forbidden`.

use crm_events::catalog::values::Role;
use crm_events::ids::{ImpersonationId, SiteId, UserId};

/// What the policy needs to know about a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserView {
    pub id: UserId,
    pub site_id: SiteId,
    pub role: Role,
    pub active: bool,
}

/// The site's impersonation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpersonationRules {
    pub enabled: bool,
    pub max_minutes: u32,
    pub reason_required: bool,
    pub notify_subject: bool,
}

impl Default for ImpersonationRules {
    fn default() -> Self {
        Self {
            enabled: true,
            max_minutes: 60,
            reason_required: true,
            notify_subject: false,
        }
    }
}

/// Who is asking: the real human, the account acted as, and the impersonation
/// session when they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub actor: UserView,
    pub subject: UserView,
    pub impersonation: Option<ImpersonationId>,
    /// The impersonation is view only ("View only" rather than "Log in as user"):
    /// every write is refused. Never set outside an impersonation.
    pub view_only: bool,
}

impl Caller {
    /// A user acting as themselves.
    #[must_use]
    pub fn as_self(user: UserView) -> Self {
        Self {
            actor: user,
            subject: user,
            impersonation: None,
            view_only: false,
        }
    }

    #[must_use]
    pub fn is_impersonating(&self) -> bool {
        self.impersonation.is_some()
    }
}

/// Everything a caller can ask to do, for the policy to rule on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List the site's users.
    ReadUsers,
    /// Create users, change roles, deactivate or reactivate.
    ManageUsers,
    /// Read the site's impersonation settings.
    ReadSiteSettings,
    /// Change the site's impersonation settings.
    ChangeSiteSettings,
    /// Log in as another user.
    StartImpersonation,
    /// Read the site's audit trail, export it, verify the chain.
    ReadAudit,
    /// Read the raw event log.
    ReadEvents,
    /// Read the sessions in which someone logged in as me.
    ReadOwnImpersonations,
    /// Change my password.
    ChangeOwnPassword,
    /// Change my sign-in email.
    ChangeOwnEmail,
    /// Read the Lead Manager: the leads assigned to me.
    ReadOwnLeads,
    /// Read every lead of the site (`scope=site`).
    ReadAllLeads,
    /// Use the Lead Manager on leads assigned to me: create, edit, notes, tasks, ...
    WorkOwnLeads,
    /// Edit every lead of the site, assign leads to others.
    WorkAllLeads,
    /// Read my settings, templates and communication tools.
    ReadOwnSettings,
    /// Change my settings, templates and communication tools.
    ManageOwnSettings,
    /// Mark my notifications read.
    MarkOwnNotificationsRead,
    /// Erase a lead's personal data (a right to be forgotten).
    EraseLeads,
    /// Revert what an ended "Log in as user" session changed.
    RevertSessions,
    /// See my own Lead Manager, leads and settings as they were at a past moment
    /// (anyone else's takes [`Action::ReadAudit`]).
    ReadOwnPast,
}

/// Why the policy said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller's role (or the subject's, while impersonating) does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// Allowed to the real human, but not while logged in as someone else.
    #[error("{0} is not allowed while logged in as another user")]
    ImpersonationForbidden(&'static str),
    /// A write in a view-only impersonation.
    #[error("this \"Log in as user\" session is view only: nothing can be changed in it")]
    ReadOnly,
}

/// Rules on `action` for `caller`.
///
/// # Errors
/// [`Refusal::ImpersonationForbidden`] for the actions reserved to the real human
/// while impersonating; [`Refusal::ReadOnly`] for any write in a view-only
/// impersonation; [`Refusal::Forbidden`] when the role does not allow it.
pub fn authorize(caller: &Caller, action: Action) -> Result<(), Refusal> {
    if caller.is_impersonating() {
        if let Some(what) = reserved_to_the_real_human(action) {
            return Err(Refusal::ImpersonationForbidden(what));
        }
        if writes(action) {
            may_write(caller)?;
        }
    }
    let who = &caller.subject;
    if !who.active {
        return Err(Refusal::Forbidden("this account is deactivated".into()));
    }
    let role = who.role;
    let allowed = match action {
        Action::ReadUsers | Action::ReadAudit | Action::ReadEvents => {
            matches!(role, Role::Owner | Role::Admin | Role::Auditor)
        }
        Action::ManageUsers | Action::ReadSiteSettings | Action::StartImpersonation => {
            matches!(role, Role::Owner | Role::Admin)
        }
        Action::ReadAllLeads
        | Action::WorkAllLeads
        | Action::EraseLeads
        | Action::RevertSessions => {
            matches!(role, Role::Owner | Role::Admin)
        }
        Action::ChangeSiteSettings => role == Role::Owner,
        // Auditors change nothing but their own password.
        Action::ReadOwnLeads
        | Action::WorkOwnLeads
        | Action::ChangeOwnEmail
        | Action::ManageOwnSettings => role != Role::Auditor,
        Action::ReadOwnImpersonations
        | Action::ChangeOwnPassword
        | Action::ReadOwnSettings
        | Action::ReadOwnPast
        | Action::MarkOwnNotificationsRead => true,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::Forbidden(format!(
            "a user with role {role} may not do this"
        )))
    }
}

fn reserved_to_the_real_human(action: Action) -> Option<&'static str> {
    match action {
        Action::ChangeOwnPassword => Some("changing the password"),
        Action::ChangeOwnEmail => Some("changing the email"),
        Action::ManageUsers => Some("managing users and roles"),
        Action::ChangeSiteSettings => Some("changing site settings"),
        Action::StartImpersonation => Some("logging in as another user"),
        Action::EraseLeads => Some("erasing a lead's personal data"),
        Action::RevertSessions => Some("reverting a session"),
        // The agent reads what they are told; whoever acts as them must not.
        Action::MarkOwnNotificationsRead => Some("marking the notifications read"),
        Action::ReadAudit
        | Action::ReadEvents
        | Action::ReadOwnImpersonations
        | Action::ReadOwnPast => Some("reading the audit trail"),
        Action::ReadUsers
        | Action::ReadSiteSettings
        | Action::ReadOwnLeads
        | Action::ReadAllLeads
        | Action::WorkOwnLeads
        | Action::WorkAllLeads
        | Action::ReadOwnSettings
        | Action::ManageOwnSettings => None,
    }
}

/// Whether the caller may change anything at all: not in a view-only impersonation
/// (ending the session aside, which is not a change of the agent's account).
///
/// # Errors
/// [`Refusal::ReadOnly`].
pub fn may_write(caller: &Caller) -> Result<(), Refusal> {
    if caller.is_impersonating() && caller.view_only {
        Err(Refusal::ReadOnly)
    } else {
        Ok(())
    }
}

/// Whether `action` changes anything (refused in a view-only impersonation).
fn writes(action: Action) -> bool {
    match action {
        Action::ManageUsers
        | Action::ChangeSiteSettings
        | Action::StartImpersonation
        | Action::ChangeOwnPassword
        | Action::ChangeOwnEmail
        | Action::WorkOwnLeads
        | Action::WorkAllLeads
        | Action::ManageOwnSettings
        | Action::MarkOwnNotificationsRead
        | Action::EraseLeads
        | Action::RevertSessions => true,
        Action::ReadUsers
        | Action::ReadSiteSettings
        | Action::ReadAudit
        | Action::ReadEvents
        | Action::ReadOwnImpersonations
        | Action::ReadOwnLeads
        | Action::ReadAllLeads
        | Action::ReadOwnSettings
        | Action::ReadOwnPast => false,
    }
}

/// Why "Log in as user" is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImpersonationRefusal {
    #[error("only owners and admins may log in as another user")]
    CallerNotAllowed,
    #[error("only agents can be logged in as")]
    TargetNotAnAgent,
    #[error("you cannot log in as yourself")]
    Yourself,
    #[error("that user is deactivated")]
    TargetDeactivated,
    #[error("that user belongs to another site")]
    OtherSite,
    #[error("already logged in as another user: return to admin first")]
    AlreadyImpersonating,
    #[error("logging in as users is switched off for this site")]
    Disabled,
    #[error("a reason is required")]
    ReasonRequired,
}

/// Rules on `caller` logging in as `target`. Checked at start and again on every
/// request of the session (with `reason_given` true then).
///
/// # Errors
/// The first rule that refuses, in the order of [`ImpersonationRefusal`].
pub fn may_impersonate(
    caller: &Caller,
    target: &UserView,
    rules: &ImpersonationRules,
    reason_given: bool,
) -> Result<(), ImpersonationRefusal> {
    let admin = &caller.actor;
    if caller.is_impersonating() {
        return Err(ImpersonationRefusal::AlreadyImpersonating);
    }
    if !admin.active || !matches!(admin.role, Role::Owner | Role::Admin) {
        return Err(ImpersonationRefusal::CallerNotAllowed);
    }
    if target.site_id != admin.site_id {
        return Err(ImpersonationRefusal::OtherSite);
    }
    if target.id == admin.id {
        return Err(ImpersonationRefusal::Yourself);
    }
    if target.role != Role::Agent {
        return Err(ImpersonationRefusal::TargetNotAnAgent);
    }
    if !target.active {
        return Err(ImpersonationRefusal::TargetDeactivated);
    }
    if !rules.enabled {
        return Err(ImpersonationRefusal::Disabled);
    }
    if rules.reason_required && !reason_given {
        return Err(ImpersonationRefusal::ReasonRequired);
    }
    Ok(())
}

/// Whether the lead assigned to `assignee` is visible to (and workable by) `subject`.
/// Agents see only their own leads; owners and admins every lead of their site.
#[must_use]
pub fn can_see_lead(subject: &UserView, lead_site: SiteId, assignee: Option<UserId>) -> bool {
    if subject.site_id != lead_site || !subject.active {
        return false;
    }
    match subject.role {
        Role::Owner | Role::Admin => true,
        Role::Agent => assignee == Some(subject.id),
        Role::Auditor => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, site: SiteId) -> UserView {
        UserView {
            id: UserId::generate(),
            site_id: site,
            role,
            active: true,
        }
    }

    const ROLES: [Role; 4] = [Role::Owner, Role::Admin, Role::Agent, Role::Auditor];

    /// Every caller role against every target role, same site and other site, active
    /// and deactivated: only an active owner or admin into an active agent of the
    /// same site.
    #[test]
    fn only_owners_and_admins_may_log_in_as_an_active_agent_of_their_site() {
        let rules = ImpersonationRules::default();
        let home = SiteId::generate();
        for caller_role in ROLES {
            for caller_active in [true, false] {
                for target_role in ROLES {
                    for same_site in [true, false] {
                        for target_active in [true, false] {
                            let mut caller = user(caller_role, home);
                            caller.active = caller_active;
                            let site = if same_site { home } else { SiteId::generate() };
                            let mut target = user(target_role, site);
                            target.active = target_active;
                            let allowed =
                                may_impersonate(&Caller::as_self(caller), &target, &rules, true)
                                    .is_ok();
                            let expected = caller_active
                                && matches!(caller_role, Role::Owner | Role::Admin)
                                && target_role == Role::Agent
                                && same_site
                                && target_active;
                            assert_eq!(
                                allowed, expected,
                                "{caller_role} (active {caller_active}) -> {target_role} (same site {same_site}, active {target_active})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_refusals_say_why() {
        let rules = ImpersonationRules::default();
        let site = SiteId::generate();
        let admin = Caller::as_self(user(Role::Admin, site));
        let agent = user(Role::Agent, site);
        let check =
            |caller: &Caller, target: &UserView, rules: &ImpersonationRules, reason: bool| {
                may_impersonate(caller, target, rules, reason).unwrap_err()
            };
        assert_eq!(
            check(&admin, &user(Role::Owner, site), &rules, true),
            ImpersonationRefusal::TargetNotAnAgent
        );
        assert_eq!(
            check(&admin, &user(Role::Admin, site), &rules, true),
            ImpersonationRefusal::TargetNotAnAgent
        );
        assert_eq!(
            check(&admin, &admin.actor, &rules, true),
            ImpersonationRefusal::Yourself
        );
        let other = user(Role::Agent, SiteId::generate());
        assert_eq!(
            check(&admin, &other, &rules, true),
            ImpersonationRefusal::OtherSite
        );
        let off = ImpersonationRules {
            enabled: false,
            ..rules
        };
        assert_eq!(
            check(&admin, &agent, &off, true),
            ImpersonationRefusal::Disabled
        );
        assert_eq!(
            check(&admin, &agent, &rules, false),
            ImpersonationRefusal::ReasonRequired
        );
        let optional = ImpersonationRules {
            reason_required: false,
            ..rules
        };
        assert!(may_impersonate(&admin, &agent, &optional, false).is_ok());
        let nested = Caller {
            impersonation: Some(ImpersonationId::generate()),
            subject: agent,
            ..admin
        };
        let another_agent = user(Role::Agent, site);
        assert_eq!(
            check(&nested, &another_agent, &rules, true),
            ImpersonationRefusal::AlreadyImpersonating
        );
        let agent_caller = Caller::as_self(agent);
        assert_eq!(
            check(&agent_caller, &another_agent, &rules, true),
            ImpersonationRefusal::CallerNotAllowed
        );
    }

    /// Every action, as each role, acting as self and while impersonating an agent.
    #[test]
    fn actions_follow_the_subject_and_the_reserved_ones_are_refused_while_impersonating() {
        use Action::*;
        let all = [
            ReadUsers,
            ManageUsers,
            ReadSiteSettings,
            ChangeSiteSettings,
            StartImpersonation,
            ReadAudit,
            ReadEvents,
            ReadOwnImpersonations,
            ChangeOwnPassword,
            ChangeOwnEmail,
            ReadOwnLeads,
            ReadAllLeads,
            WorkOwnLeads,
            WorkAllLeads,
            ReadOwnSettings,
            ManageOwnSettings,
            MarkOwnNotificationsRead,
        ];
        let site = SiteId::generate();
        let table: [(Role, &[Action]); 4] = [
            (Role::Owner, &all),
            (
                Role::Admin,
                &[
                    ReadUsers,
                    ManageUsers,
                    ReadSiteSettings,
                    StartImpersonation,
                    ReadAudit,
                    ReadEvents,
                    ReadOwnImpersonations,
                    ChangeOwnPassword,
                    ChangeOwnEmail,
                    ReadOwnLeads,
                    ReadAllLeads,
                    WorkOwnLeads,
                    WorkAllLeads,
                    ReadOwnSettings,
                    ManageOwnSettings,
                    MarkOwnNotificationsRead,
                ],
            ),
            (
                Role::Agent,
                &[
                    ReadOwnImpersonations,
                    ChangeOwnPassword,
                    ChangeOwnEmail,
                    ReadOwnLeads,
                    WorkOwnLeads,
                    ReadOwnSettings,
                    ManageOwnSettings,
                    MarkOwnNotificationsRead,
                ],
            ),
            (
                Role::Auditor,
                &[
                    ReadUsers,
                    ReadAudit,
                    ReadEvents,
                    ReadOwnImpersonations,
                    ChangeOwnPassword,
                    ReadOwnSettings,
                    MarkOwnNotificationsRead,
                ],
            ),
        ];
        for (role, allowed) in table {
            let caller = Caller::as_self(user(role, site));
            for action in all {
                assert_eq!(
                    authorize(&caller, action).is_ok(),
                    allowed.contains(&action),
                    "{role} {action:?}"
                );
            }
        }

        let agent = user(Role::Agent, site);
        let reserved = [
            ChangeOwnPassword,
            ChangeOwnEmail,
            ManageUsers,
            ChangeSiteSettings,
            StartImpersonation,
            ReadAudit,
            ReadEvents,
            ReadOwnImpersonations,
            MarkOwnNotificationsRead,
        ];
        for admin_role in [Role::Owner, Role::Admin] {
            let caller = Caller {
                actor: user(admin_role, site),
                subject: agent,
                impersonation: Some(ImpersonationId::generate()),
                view_only: false,
            };
            for action in all {
                let result = authorize(&caller, action);
                if reserved.contains(&action) {
                    assert!(
                        matches!(result, Err(Refusal::ImpersonationForbidden(_))),
                        "{action:?}"
                    );
                } else if [
                    ReadOwnLeads,
                    WorkOwnLeads,
                    ReadOwnSettings,
                    ManageOwnSettings,
                ]
                .contains(&action)
                {
                    assert!(result.is_ok(), "{action:?}");
                } else {
                    // The agent's permissions, not the admin's.
                    assert!(matches!(result, Err(Refusal::Forbidden(_))), "{action:?}");
                }
            }
            // View only: the agent's reads, no write at all.
            let viewing = Caller {
                view_only: true,
                ..caller
            };
            for action in all {
                let result = authorize(&viewing, action);
                if reserved.contains(&action) {
                    assert!(
                        matches!(result, Err(Refusal::ImpersonationForbidden(_))),
                        "{action:?}"
                    );
                } else if [ReadOwnLeads, ReadOwnSettings].contains(&action) {
                    assert!(result.is_ok(), "{action:?}");
                } else if [WorkOwnLeads, WorkAllLeads, ManageOwnSettings].contains(&action) {
                    assert_eq!(result, Err(Refusal::ReadOnly), "{action:?}");
                } else {
                    assert!(matches!(result, Err(Refusal::Forbidden(_))), "{action:?}");
                }
            }
        }

        let mut deactivated = user(Role::Owner, site);
        deactivated.active = false;
        assert!(authorize(&Caller::as_self(deactivated), WorkOwnLeads).is_err());
    }

    #[test]
    fn agents_see_only_their_own_leads_and_nobody_sees_another_sites() {
        let site = SiteId::generate();
        let agent = user(Role::Agent, site);
        let admin = user(Role::Admin, site);
        let auditor = user(Role::Auditor, site);
        assert!(can_see_lead(&agent, site, Some(agent.id)));
        assert!(!can_see_lead(&agent, site, Some(UserId::generate())));
        assert!(!can_see_lead(&agent, site, None));
        assert!(can_see_lead(&admin, site, Some(agent.id)));
        assert!(can_see_lead(&admin, site, None));
        assert!(!can_see_lead(&auditor, site, Some(agent.id)));
        let elsewhere = SiteId::generate();
        assert!(!can_see_lead(&admin, elsewhere, None));
        assert!(!can_see_lead(&agent, elsewhere, Some(agent.id)));
    }
}
