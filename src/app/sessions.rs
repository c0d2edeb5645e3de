//! Credentials and server-side sessions, kept outside the event log.
//!
//! Passwords are hashed with Argon2id (its recommended parameters) on a blocking
//! thread. Tokens are 256 random bits from the operating system; only their SHA-256
//! is stored, and looking one up is an index probe on that hash, so comparing tokens
//! never depends on where two tokens first differ.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use crm_events::ids::{ImpersonationId, SiteId, UserId};
use crm_events::{on_pool, Database, SideWrite};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::AppError;
use super::RequestContext;
use crate::domain::values::{Email, Password};

/// A new bearer token (64 hex characters).
pub(crate) fn new_token() -> Result<String, AppError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| {
        AppError::Store(crm_events::StoreError::Database(sqlx::Error::Io(e.into())))
    })?;
    Ok(hex::encode(bytes))
}

/// What is stored for a token, and what a presented token is looked up by. The
/// token itself is never compared with anything: the database finds its SHA-256,
/// so how long a lookup takes tells an attacker at most about hashes, from which no
/// token can be made (this is what keeps token checks free of timing leaks, the
/// reason for comparing secrets in constant time).
#[must_use]
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Hashes a password (Argon2id, random salt) off the async threads.
pub(crate) async fn hash_password(password: Password) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|why| AppError::Store(crm_events::StoreError::Database(sqlx::Error::Protocol(why))))
}

/// Checks `password` against `stored`. When there is no stored hash (unknown email)
/// it checks against a decoy, so that an unknown email takes as long as a wrong
/// password and does not reveal which emails exist.
pub(crate) async fn verify_password(stored: Option<String>, password: String) -> bool {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let known = stored.is_some();
    let matches = tokio::task::spawn_blocking(move || {
        let hash = stored.unwrap_or_else(|| {
            DECOY
                .get_or_init(|| {
                    SaltString::encode_b64(b"decoy-salt-bytes")
                        .ok()
                        .and_then(|salt| {
                            Argon2::default()
                                .hash_password(b"no password matches this", &salt)
                                .map(|h| h.to_string())
                                .ok()
                        })
                        .unwrap_or_default()
                })
                .clone()
        });
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false);
    known && matches
}

/// The credentials of a new user, written with its `UserCreated`. A taken email
/// refuses the append ([`StoreError::SideWriteRefused`] with `taken`).
pub(crate) fn credentials_created(
    user: UserId,
    site: SiteId,
    email: &Email,
    password_hash: &str,
) -> SideWrite {
    SideWrite::one(
        CREDENTIALS,
        "INSERT INTO credentials (user_id, site_id, email, password_hash) VALUES ($1, $2, $3, $4)",
        vec![
            user.as_uuid().into(),
            site.as_uuid().into(),
            email.as_str().into(),
            password_hash.into(),
        ],
    )
}

/// What [`SideWrite::what`] calls the credentials.
pub(crate) const CREDENTIALS: &str = "credentials";

/// The new password hash, written with `UserPasswordChanged`, only over the hash
/// the current password was checked against (a change made meanwhile refuses it).
pub(crate) fn password_changed(user: UserId, checked: &str, new: &str) -> SideWrite {
    SideWrite::one(
        CREDENTIALS,
        "UPDATE credentials SET password_hash = $1 WHERE user_id = $2 AND password_hash = $3",
        vec![new.into(), user.as_uuid().into(), checked.into()],
    )
}

/// The user and password hash registered under `email`.
pub(crate) async fn find_credentials(
    db: &Database,
    email: &str,
) -> Result<Option<(UserId, String)>, AppError> {
    let row: Option<(Uuid, String)> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT user_id, password_hash FROM credentials WHERE email = $1"
    )
    .bind(email.trim().to_lowercase())
    .fetch_optional(pool)
    .await?);
    Ok(row.map(|(user, hash)| (UserId::from_uuid(user), hash)))
}

/// The password hash of `user`.
pub(crate) async fn password_hash_of(
    db: &Database,
    user: UserId,
) -> Result<Option<String>, AppError> {
    let row: Option<(String,)> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT password_hash FROM credentials WHERE user_id = $1"
    )
    .bind(user.as_uuid())
    .fetch_optional(pool)
    .await?);
    Ok(row.map(|(hash,)| hash))
}

/// One session row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub site_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub impersonation_id: Option<Uuid>,
    pub impersonated_user_id: Option<Uuid>,
    pub impersonation_expires_at: Option<DateTime<Utc>>,
    /// When a change withdrew the right to the impersonation it holds.
    pub impersonation_revoked_at: Option<DateTime<Utc>>,
    /// The last impersonation the session took up, ended or not.
    pub last_impersonation_id: Option<Uuid>,
}

impl SessionRow {
    /// Neither ended nor expired at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.ended_at.is_none() && self.expires_at > now
    }

    /// The SHA-256 of the session's token.
    pub fn token_hash(&self) -> [u8; 32] {
        self.token_hash.as_slice().try_into().unwrap_or([0; 32])
    }
}

/// What [`SideWrite::what`] calls a session.
pub(crate) const SESSION: &str = "session";

/// A new session, written with `UserLoggedIn`: only while the account is active
/// (a deactivation committed first refuses it).
pub(crate) fn session_opened(
    token_hash: &[u8; 32],
    user: UserId,
    site: SiteId,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> SideWrite {
    SideWrite::one(
        SESSION,
        "INSERT INTO sessions (token_hash, user_id, site_id, created_at, expires_at) \
         SELECT $1, $2, $3, $4, $5 \
         WHERE EXISTS (SELECT 1 FROM credentials WHERE user_id = $2 AND active = TRUE)",
        vec![
            token_hash.to_vec().into(),
            user.as_uuid().into(),
            site.as_uuid().into(),
            now.into(),
            expires_at.into(),
        ],
    )
}

/// The account's activation, written with `UserDeactivated` or
/// `UserReactivated`; sign-ins open sessions only while it is on.
pub(crate) fn credentials_active(user: UserId, active: bool) -> SideWrite {
    SideWrite::any(
        CREDENTIALS,
        "UPDATE credentials SET active = $1 WHERE user_id = $2",
        vec![active.into(), user.as_uuid().into()],
    )
}

/// The session ended, written with `UserLoggedOut`: only a session still open
/// (a second sign-out of the same token records nothing).
pub(crate) fn session_closed(token_hash: &[u8; 32], now: DateTime<Utc>) -> SideWrite {
    SideWrite::one(
        SESSION,
        "UPDATE sessions SET ended_at = $1 WHERE token_hash = $2 AND ended_at IS NULL",
        vec![now.into(), token_hash.to_vec().into()],
    )
}

/// Every open session of `user` ended, written with `UserDeactivated`. An
/// impersonation such a session holds stays on it until its end is recorded (with
/// the `ImpersonationEnded` that releases it), so that it is never lost.
pub(crate) fn sessions_of_user_closed(user: UserId, now: DateTime<Utc>) -> SideWrite {
    SideWrite::any(
        SESSION,
        "UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL",
        vec![now.into(), user.as_uuid().into()],
    )
}

/// The session takes up impersonation `id` of `subject`, written with
/// `ImpersonationStarted`: only an open session that holds none (two starts at
/// once cannot both win).
pub(crate) fn impersonation_held(
    token_hash: &[u8; 32],
    id: ImpersonationId,
    subject: UserId,
    expires_at: DateTime<Utc>,
) -> SideWrite {
    SideWrite::one(
        SESSION,
        "UPDATE sessions SET impersonation_id = $1, impersonated_user_id = $2, \
         impersonation_expires_at = $3, last_impersonation_id = $1, \
         impersonation_revoked_at = NULL \
         WHERE token_hash = $4 AND impersonation_id IS NULL AND ended_at IS NULL",
        vec![
            id.as_uuid().into(),
            subject.as_uuid().into(),
            expires_at.into(),
            token_hash.to_vec().into(),
        ],
    )
}

/// Whichever session holds impersonation `id` lets go of it, written with
/// `ImpersonationEnded`.
pub(crate) fn impersonation_released(id: ImpersonationId) -> SideWrite {
    SideWrite::any(SESSION, RELEASE, vec![id.as_uuid().into()])
}

const RELEASE: &str = "UPDATE sessions SET impersonation_id = NULL, impersonated_user_id = NULL, \
     impersonation_expires_at = NULL, impersonation_revoked_at = NULL WHERE impersonation_id = $1";

/// The row that reserves a request's idempotency key for its session, written
/// with whatever the request appends: a retry then knows the first attempt
/// committed even if its answer was never kept. For requests sent over HTTP with
/// a key (`ctx.http_request`).
///
/// `lead` is the lead the request writes to, if any: erasing it removes the row
/// (its fingerprint is a hash of the request, personal values included).
pub(crate) fn key_reserved(
    ctx: &RequestContext,
    now: DateTime<Utc>,
    lead: Option<uuid::Uuid>,
) -> Option<SideWrite> {
    let (Some(key), Some(request)) = (&ctx.idempotency_key, ctx.http_request) else {
        return None;
    };
    Some(SideWrite::any(
        "http_idempotency",
        "INSERT INTO http_idempotency \
         (token_hash, key, fingerprint, status, content_type, body, created_at, lead_id) \
         VALUES ($1, $2, $3, 0, NULL, $4, $5, $6) ON CONFLICT (token_hash, key) DO NOTHING",
        vec![
            ctx.session.to_vec().into(),
            key.as_str().into(),
            request.to_vec().into(),
            Vec::<u8>::new().into(),
            now.into(),
            lead.into(),
        ],
    ))
}

/// What [`SideWrite::what`] calls the check that a request still acts as the
/// impersonation it was authenticated in.
pub(crate) const ACTING: &str = "impersonation in progress";

/// Written with whatever a request appends while logged in as someone: its
/// session must still hold that impersonation, unrevoked and unexpired at `now`,
/// when the append commits (a Return to Admin, a sign-out or a revocation that
/// committed first refuses it, and so does the expiry, before its end is recorded).
pub(crate) fn still_acting(
    token_hash: &[u8; 32],
    id: ImpersonationId,
    now: DateTime<Utc>,
) -> SideWrite {
    SideWrite::one(
        ACTING,
        "UPDATE sessions SET impersonation_id = impersonation_id \
         WHERE token_hash = $1 AND impersonation_id = $2 AND ended_at IS NULL \
         AND impersonation_revoked_at IS NULL AND impersonation_expires_at > $3",
        vec![token_hash.to_vec().into(), id.as_uuid().into(), now.into()],
    )
}

/// Whose impersonations a change withdraws the right to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Withdrawn {
    /// Those `user` makes as the admin.
    AsAdmin(UserId),
    /// Those made as `user`.
    AsSubject(UserId),
    /// Every one on the site.
    OnSite(SiteId),
}

/// Marks the impersonations a change withdraws the right to as revoked, written
/// with the change: from then on no write made in them commits, and their end
/// is recorded as `revoked` right after.
pub(crate) fn impersonations_revoked(withdrawn: Withdrawn, now: DateTime<Utc>) -> SideWrite {
    let (sql, id) = match withdrawn {
        Withdrawn::AsAdmin(user) => (
            "UPDATE sessions SET impersonation_revoked_at = $1 WHERE user_id = $2 \
             AND impersonation_id IS NOT NULL AND impersonation_revoked_at IS NULL",
            user.as_uuid(),
        ),
        Withdrawn::AsSubject(user) => (
            "UPDATE sessions SET impersonation_revoked_at = $1 WHERE impersonated_user_id = $2 \
             AND impersonation_id IS NOT NULL AND impersonation_revoked_at IS NULL",
            user.as_uuid(),
        ),
        Withdrawn::OnSite(site) => (
            "UPDATE sessions SET impersonation_revoked_at = $1 WHERE site_id = $2 \
             AND impersonation_id IS NOT NULL AND impersonation_revoked_at IS NULL",
            site.as_uuid(),
        ),
    };
    SideWrite::any(SESSION, sql, vec![now.into(), id.into()])
}

/// Releases impersonation `id` from a session that still points at it although
/// its end is in the log (a database written before ends and releases were one
/// transaction). Nothing about the impersonation changes: only a stale pointer.
pub(crate) async fn release_ended(db: &Database, id: ImpersonationId) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(RELEASE)
        .bind(id.as_uuid())
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

const SESSION_COLUMNS: &str = "SELECT token_hash, user_id, site_id, expires_at, ended_at, \
     impersonation_id, impersonated_user_id, impersonation_expires_at, impersonation_revoked_at, \
     last_impersonation_id FROM sessions";

/// The session with this token hash, ended or not.
pub(crate) async fn find_session(
    db: &Database,
    token_hash: &[u8; 32],
) -> Result<Option<SessionRow>, AppError> {
    let sql = format!("{SESSION_COLUMNS} WHERE token_hash = $1");
    let row: Option<SessionRow> = on_pool!(db, |pool| sqlx::query_as(&sql)
        .bind(token_hash.as_slice())
        .fetch_optional(pool)
        .await?);
    Ok(row)
}

/// The session with this token hash, if it is neither ended nor expired at `now`.
pub(crate) async fn find_live_session(
    db: &Database,
    token_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<Option<SessionRow>, AppError> {
    Ok(find_session(db, token_hash)
        .await?
        .filter(|s| s.is_live(now)))
}

/// Which sessions holding an impersonation to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding {
    /// Every one, of every site: the ones whose end may be due.
    Anywhere,
    /// Those of a site.
    OnSite(SiteId),
    /// Those in which a user is the admin or the subject.
    Involving(UserId),
}

/// The sessions holding an impersonation, of those `which` names.
pub(crate) async fn holding(db: &Database, which: Holding) -> Result<Vec<SessionRow>, AppError> {
    let (condition, id) = match which {
        Holding::Anywhere => ("", None),
        Holding::OnSite(site) => ("site_id = $1 AND ", Some(site.as_uuid())),
        Holding::Involving(user) => (
            "(user_id = $1 OR impersonated_user_id = $1) AND ",
            Some(user.as_uuid()),
        ),
    };
    let sql = format!("{SESSION_COLUMNS} WHERE {condition}impersonation_id IS NOT NULL");
    let rows: Vec<SessionRow> = on_pool!(db, |pool| {
        let query = sqlx::query_as(&sql);
        match id {
            Some(id) => query.bind(id),
            None => query,
        }
        .fetch_all(pool)
        .await?
    });
    Ok(rows)
}
