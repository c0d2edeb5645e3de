//! Login throttling: after repeated failed sign-ins for one account, or from one
//! client address, further attempts are refused for a while, before the password is
//! even looked at; each further failure doubles the wait, up to a ceiling. A correct
//! password signs in again once the wait is over (and clears the account's count).
//!
//! The counts live in this process's memory: several processes behind one address
//! each count on their own, and a restart forgets them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// How many failures one key may have before it waits, and how long.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Failures allowed before the first wait.
    free: u32,
    /// The first wait; each further failure doubles it.
    first_wait: Duration,
}

/// One account (by email): a handful of guesses.
const ACCOUNT: Limits = Limits {
    free: 5,
    first_wait: Duration::seconds(30),
};

/// One client address, whatever accounts it tries: room for a shared office.
const CLIENT: Limits = Limits {
    free: 20,
    first_wait: Duration::seconds(30),
};

/// The longest wait.
const MAX_WAIT: Duration = Duration::minutes(15);

/// A key's failures are forgotten this long after its last one (once any wait is over).
const FORGET_AFTER: Duration = Duration::minutes(15);

/// At most this many keys are remembered; beyond it the stale ones go first, then
/// those that are not waiting.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Client(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: DateTime<Utc>,
    /// Refused until then.
    until: Option<DateTime<Utc>>,
}

impl Strikes {
    fn stale(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| until <= now) && self.last + FORGET_AFTER <= now
    }
}

/// The failed sign-ins this process has seen.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    keys: Mutex<HashMap<Key, Strikes>>,
}

impl LoginThrottle {
    /// How many seconds a sign-in for `email` from `client` must still wait, if it
    /// must (rounded up: one who waits that long is not refused again).
    pub fn wait(&self, email: &str, client: Option<IpAddr>, now: DateTime<Utc>) -> Option<u64> {
        let keys = self.lock();
        let until = Self::keys(email, client)
            .filter_map(|(key, _)| keys.get(&key)?.until)
            .filter(|until| *until > now)
            .max()?;
        let left = (until - now).num_milliseconds();
        u64::try_from((left + 999) / 1000).ok()
    }

    /// Counts a failed sign-in against the account and the client.
    pub fn failed(&self, email: &str, client: Option<IpAddr>, now: DateTime<Utc>) {
        let mut keys = self.lock();
        for (key, limits) in Self::keys(email, client) {
            let strikes = keys.entry(key).or_insert(Strikes {
                failures: 0,
                last: now,
                until: None,
            });
            if strikes.stale(now) {
                strikes.failures = 0;
            }
            strikes.failures += 1;
            strikes.last = now;
            if strikes.failures >= limits.free {
                let doublings = (strikes.failures - limits.free).min(16);
                let wait = limits
                    .first_wait
                    .checked_mul(1 << doublings)
                    .map_or(MAX_WAIT, |wait| wait.min(MAX_WAIT));
                strikes.until = Some(now + wait);
            }
        }
        if keys.len() > MAX_KEYS {
            Self::trim(&mut keys, now);
        }
    }

    /// A correct sign-in: the account starts afresh (the client's count stays, so a
    /// client cannot clear it by signing in to an account of its own between guesses).
    pub fn succeeded(&self, email: &str) {
        self.lock().remove(&Key::Account(Self::account(email)));
    }

    fn keys(email: &str, client: Option<IpAddr>) -> impl Iterator<Item = (Key, Limits)> {
        std::iter::once((Key::Account(Self::account(email)), ACCOUNT))
            .chain(client.map(|ip| (Key::Client(ip), CLIENT)))
    }

    /// Emails are matched without regard to case or surrounding blanks.
    fn account(email: &str) -> String {
        email.trim().to_lowercase()
    }

    fn trim(keys: &mut HashMap<Key, Strikes>, now: DateTime<Utc>) {
        keys.retain(|_, strikes| !strikes.stale(now));
        if keys.len() > MAX_KEYS {
            keys.retain(|_, strikes| strikes.until.is_some_and(|until| until > now));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Strikes>> {
        // The map holds no invariant a panic elsewhere could break halfway.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn an_account_waits_after_five_failures_and_each_further_one_doubles_the_wait() {
        let throttle = LoginThrottle::default();
        for i in 0..4 {
            throttle.failed("Ann@Example.com", None, at(i));
            assert_eq!(throttle.wait("ann@example.com", None, at(i)), None);
        }
        throttle.failed(" ann@example.com", None, at(4));
        let wait = throttle.wait("ANN@example.com", None, at(4)).unwrap();
        assert_eq!(wait, 30);
        assert_eq!(throttle.wait("ann@example.com", None, at(34)), None);
        throttle.failed("ann@example.com", None, at(34));
        assert_eq!(throttle.wait("ann@example.com", None, at(34)), Some(60));
        // Another account is not affected.
        assert_eq!(throttle.wait("bob@example.com", None, at(34)), None);
        // A correct sign-in starts the account afresh.
        throttle.succeeded("ann@example.com");
        throttle.failed("ann@example.com", None, at(100));
        assert_eq!(throttle.wait("ann@example.com", None, at(100)), None);
    }

    #[test]
    fn a_client_waits_after_twenty_failures_whatever_accounts_it_tries() {
        let throttle = LoginThrottle::default();
        let client = Some(IpAddr::from([192, 0, 2, 7]));
        for i in 0..19 {
            throttle.failed(&format!("user{i}@example.com"), client, at(i));
        }
        assert_eq!(throttle.wait("new@example.com", client, at(19)), None);
        throttle.failed("user19@example.com", client, at(19));
        assert!(throttle.wait("new@example.com", client, at(19)).is_some());
        assert_eq!(throttle.wait("new@example.com", None, at(19)), None);
        let other = Some(IpAddr::from([192, 0, 2, 8]));
        assert_eq!(throttle.wait("new@example.com", other, at(19)), None);
        // Signing in to some account does not clear the client's count.
        throttle.succeeded("user0@example.com");
        assert!(throttle.wait("new@example.com", client, at(19)).is_some());
    }

    #[test]
    fn the_wait_never_exceeds_the_ceiling_and_old_failures_are_forgotten() {
        let throttle = LoginThrottle::default();
        let mut now = 0;
        for _ in 0..40 {
            throttle.failed("ann@example.com", None, at(now));
            let wait = throttle.wait("ann@example.com", None, at(now));
            assert!(wait.is_none_or(|w| w <= 15 * 60), "{wait:?}");
            now += wait.map_or(0, |w| i64::try_from(w).unwrap());
        }
        // Long after the last failure, one more is a first one again.
        now += 16 * 60;
        throttle.failed("ann@example.com", None, at(now));
        assert_eq!(throttle.wait("ann@example.com", None, at(now)), None);
    }
}
