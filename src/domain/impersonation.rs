//! The impersonation aggregate: one "Log in as user" session, from start to end.

use chrono::{DateTime, Duration, Utc};
use crm_events::catalog::impersonation::*;
use crm_events::catalog::values::{EndReason, ImpersonationMode};
use crm_events::ids::UserId;
use crm_events::DomainEvent;

use super::values::Reason;

/// A session as its events leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    pub admin_id: UserId,
    pub subject_id: UserId,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub mode: ImpersonationMode,
    pub ended: Option<(EndReason, DateTime<Utc>)>,
    /// What it changed was reverted (once: a second revert would undo what the
    /// agent did since the first, as if it were the session's).
    pub reverted: bool,
}

impl Impersonation {
    #[must_use]
    pub fn started(started: &ImpersonationStarted, at: DateTime<Utc>) -> Self {
        Self {
            admin_id: started.admin_id,
            subject_id: started.subject_id,
            reason: started.reason.clone(),
            started_at: at,
            expires_at: started.expires_at,
            mode: started.mode,
            ended: None,
            reverted: false,
        }
    }

    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ImpersonationEnded(e) => {
                self.ended.get_or_insert((e.end_reason, e.ended_at));
            }
            DomainEvent::ImpersonationReverted(_) => self.reverted = true,
            _ => {}
        }
    }

    /// Whether the session is still running at `now`.
    #[must_use]
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.ended.is_none() && now < self.expires_at
    }
}

/// Starting a session of at most `max_minutes` (the policy has already ruled).
#[must_use]
pub fn start(
    admin_id: UserId,
    subject_id: UserId,
    reason: Option<Reason>,
    mode: ImpersonationMode,
    now: DateTime<Utc>,
    max_minutes: u32,
) -> Vec<DomainEvent> {
    vec![ImpersonationStarted {
        admin_id,
        subject_id,
        reason: reason.map(Reason::into_inner),
        expires_at: now + Duration::minutes(i64::from(max_minutes)),
        mode,
    }
    .into()]
}

/// Ends the session (nothing when it already ended). An expired session ends at its
/// expiry time, whenever that is noticed; any other end at `now` (or at expiry, if
/// that came first: a session never outlives its expiry).
#[must_use]
pub fn end(session: &Impersonation, reason: EndReason, now: DateTime<Utc>) -> Vec<DomainEvent> {
    if session.ended.is_some() {
        return vec![];
    }
    let (end_reason, ended_at) = if now >= session.expires_at {
        (EndReason::Expired, session.expires_at)
    } else {
        (reason, now)
    };
    vec![ImpersonationEnded {
        end_reason,
        ended_at,
    }
    .into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: DateTime<Utc>) -> Impersonation {
        let events = start(
            UserId::generate(),
            UserId::generate(),
            Some(Reason::parse("Fix the template").unwrap()),
            ImpersonationMode::View,
            now,
            60,
        );
        let DomainEvent::ImpersonationStarted(s) = &events[0] else {
            panic!()
        };
        Impersonation::started(s, now)
    }

    #[test]
    fn a_session_expires_after_the_sites_maximum_and_is_recorded_as_expired_at_expiry() {
        let now = Utc::now();
        let s = session(now);
        assert_eq!(s.expires_at, now + Duration::minutes(60));
        assert!(s.is_live(now + Duration::minutes(59)));
        assert!(!s.is_live(now + Duration::minutes(60)));
        let late = now + Duration::minutes(95);
        let events = end(&s, EndReason::Returned, late);
        assert_eq!(
            events,
            [ImpersonationEnded {
                end_reason: EndReason::Expired,
                ended_at: s.expires_at
            }
            .into()]
        );
    }

    #[test]
    fn a_session_ends_once() {
        let now = Utc::now();
        let mut s = session(now);
        let events = end(&s, EndReason::Returned, now + Duration::minutes(5));
        assert_eq!(
            events,
            [ImpersonationEnded {
                end_reason: EndReason::Returned,
                ended_at: now + Duration::minutes(5)
            }
            .into()]
        );
        s.apply(&events[0]);
        assert_eq!(
            end(&s, EndReason::LoggedOut, now + Duration::minutes(6)),
            []
        );
        assert!(!s.is_live(now + Duration::minutes(6)));
    }
}
