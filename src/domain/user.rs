//! The user aggregate: accounts, roles and activity, and the rules for managing them.

use crm_events::catalog::user::*;
use crm_events::catalog::values::Role;
use crm_events::ids::{SiteId, UserId};
use crm_events::DomainEvent;

use super::policy::UserView;
use super::values::{Email, PersonName};

/// A user as their events leave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub site_id: SiteId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub active: bool,
}

impl User {
    #[must_use]
    pub fn created(id: UserId, site_id: SiteId, created: &UserCreated) -> Self {
        Self {
            id,
            site_id,
            name: created.name.clone(),
            email: created.email.clone(),
            role: created.role,
            active: true,
        }
    }

    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::UserRoleChanged(e) => self.role = e.to,
            DomainEvent::UserEmailChanged(e) => self.email = e.to.clone(),
            DomainEvent::UserDeactivated(_) => self.active = false,
            DomainEvent::UserReactivated(_) => self.active = true,
            _ => {}
        }
    }

    /// What the authorization policy needs to know.
    #[must_use]
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            site_id: self.site_id,
            role: self.role,
            active: self.active,
        }
    }
}

/// Why a user-management command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserRejection {
    #[error("only the owner may create or change admins and owners")]
    OwnerOnly,
    #[error("a site has exactly one owner: the owner's role cannot change, and nobody else can become owner")]
    OneOwner,
    #[error("you cannot deactivate yourself or change your own role")]
    OwnAccount,
    #[error("that user belongs to another site")]
    OtherSite,
}

/// Creating a user. Admins may create agents and auditors; the owner also admins.
/// Nobody creates a second owner.
///
/// # Errors
/// [`UserRejection::OneOwner`], [`UserRejection::OwnerOnly`].
pub fn create(
    by: &UserView,
    name: PersonName,
    email: &Email,
    role: Role,
) -> Result<Vec<DomainEvent>, UserRejection> {
    match role {
        Role::Owner => return Err(UserRejection::OneOwner),
        Role::Admin if by.role != Role::Owner => return Err(UserRejection::OwnerOnly),
        _ => {}
    }
    Ok(vec![UserCreated {
        name: name.into_inner(),
        email: email.as_str().to_owned(),
        role,
    }
    .into()])
}

/// Checks that `by` may manage `target` at all.
fn manageable(by: &UserView, target: &User) -> Result<(), UserRejection> {
    if by.site_id != target.site_id {
        return Err(UserRejection::OtherSite);
    }
    if by.id == target.id {
        return Err(UserRejection::OwnAccount);
    }
    if target.role == Role::Owner {
        return Err(UserRejection::OneOwner);
    }
    if target.role == Role::Admin && by.role != Role::Owner {
        return Err(UserRejection::OwnerOnly);
    }
    Ok(())
}

/// Changes a user's role (nothing when it is already that role).
///
/// # Errors
/// As [`create`], plus [`UserRejection::OwnAccount`] and [`UserRejection::OtherSite`].
pub fn change_role(
    by: &UserView,
    target: &User,
    role: Role,
) -> Result<Vec<DomainEvent>, UserRejection> {
    manageable(by, target)?;
    match role {
        Role::Owner => return Err(UserRejection::OneOwner),
        Role::Admin if by.role != Role::Owner => return Err(UserRejection::OwnerOnly),
        _ => {}
    }
    if target.role == role {
        return Ok(vec![]);
    }
    Ok(vec![UserRoleChanged {
        from: target.role,
        to: role,
    }
    .into()])
}

/// Deactivates or reactivates a user (nothing when already so).
///
/// # Errors
/// As [`change_role`].
pub fn set_active(
    by: &UserView,
    target: &User,
    active: bool,
) -> Result<Vec<DomainEvent>, UserRejection> {
    manageable(by, target)?;
    Ok(match (target.active, active) {
        (true, false) => vec![UserDeactivated {}.into()],
        (false, true) => vec![UserReactivated {}.into()],
        _ => vec![],
    })
}

/// Changes one's sign-in email (nothing when unchanged).
#[must_use]
pub fn change_email(user: &User, email: &Email) -> Vec<DomainEvent> {
    if user.email == email.as_str() {
        return vec![];
    }
    vec![UserEmailChanged {
        from: user.email.clone(),
        to: email.as_str().to_owned(),
    }
    .into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, site: SiteId) -> User {
        User {
            id: UserId::generate(),
            site_id: site,
            name: "X".into(),
            email: "x@example.com".into(),
            role,
            active: true,
        }
    }

    #[test]
    fn admins_manage_agents_and_auditors_and_only_the_owner_manages_admins() {
        let site = SiteId::generate();
        let owner = user(Role::Owner, site);
        let admin = user(Role::Admin, site);
        let agent = user(Role::Agent, site);
        let other_admin = user(Role::Admin, site);
        let email = Email::parse("new@example.com").unwrap();
        let name = || PersonName::parse("New").unwrap();

        assert!(create(&admin.view(), name(), &email, Role::Agent).is_ok());
        assert!(create(&admin.view(), name(), &email, Role::Auditor).is_ok());
        assert_eq!(
            create(&admin.view(), name(), &email, Role::Admin),
            Err(UserRejection::OwnerOnly)
        );
        assert_eq!(
            create(&admin.view(), name(), &email, Role::Owner),
            Err(UserRejection::OneOwner)
        );
        assert!(create(&owner.view(), name(), &email, Role::Admin).is_ok());
        assert_eq!(
            create(&owner.view(), name(), &email, Role::Owner),
            Err(UserRejection::OneOwner)
        );

        assert_eq!(
            change_role(&admin.view(), &agent, Role::Auditor)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            change_role(&admin.view(), &agent, Role::Admin),
            Err(UserRejection::OwnerOnly)
        );
        assert_eq!(
            change_role(&admin.view(), &other_admin, Role::Agent),
            Err(UserRejection::OwnerOnly)
        );
        assert_eq!(
            change_role(&owner.view(), &other_admin, Role::Agent)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            change_role(&admin.view(), &owner, Role::Agent),
            Err(UserRejection::OneOwner)
        );
        assert_eq!(
            change_role(&owner.view(), &agent, Role::Owner),
            Err(UserRejection::OneOwner)
        );
        assert_eq!(
            change_role(&admin.view(), &admin, Role::Agent),
            Err(UserRejection::OwnAccount)
        );
        assert_eq!(change_role(&owner.view(), &agent, Role::Agent).unwrap(), []);

        assert_eq!(
            set_active(&admin.view(), &admin, false),
            Err(UserRejection::OwnAccount)
        );
        assert_eq!(
            set_active(&admin.view(), &owner, false),
            Err(UserRejection::OneOwner)
        );
        let mut deactivated = agent.clone();
        let events = set_active(&admin.view(), &agent, false).unwrap();
        deactivated.apply(&events[0]);
        assert!(!deactivated.active);
        assert_eq!(set_active(&admin.view(), &deactivated, false).unwrap(), []);
        assert_eq!(
            set_active(&admin.view(), &deactivated, true).unwrap().len(),
            1
        );

        let elsewhere = user(Role::Agent, SiteId::generate());
        assert_eq!(
            set_active(&owner.view(), &elsewhere, false),
            Err(UserRejection::OtherSite)
        );
    }

    #[test]
    fn the_owner_makes_admins_and_every_change_folds_into_the_user() {
        let site = SiteId::generate();
        let owner = user(Role::Owner, site);
        let mut agent = user(Role::Agent, site);
        for event in change_role(&owner.view(), &agent, Role::Admin).unwrap() {
            agent.apply(&event);
        }
        assert_eq!(agent.role, Role::Admin);
        for event in set_active(&owner.view(), &agent, false).unwrap() {
            agent.apply(&event);
        }
        for event in set_active(&owner.view(), &agent, true).unwrap() {
            agent.apply(&event);
        }
        assert!(agent.active);
        assert_eq!(set_active(&owner.view(), &agent, true).unwrap(), []);

        let same = Email::parse("X@Example.com").unwrap();
        assert_eq!(change_email(&agent, &same), []);
        let new = Email::parse("dana@example.com").unwrap();
        let events = change_email(&agent, &new);
        assert_eq!(
            events,
            [DomainEvent::from(UserEmailChanged {
                from: "x@example.com".into(),
                to: "dana@example.com".into(),
            })]
        );
        agent.apply(&events[0]);
        assert_eq!(agent.email, "dana@example.com");
        assert_eq!(change_email(&agent, &new), []);
    }
}
