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
use crm_events::{on_pool, Database};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::AppError;
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

/// Reserves `email` for a new user. A taken email is a conflict.
pub(crate) async fn insert_credentials(
    db: &Database,
    user: UserId,
    site: SiteId,
    email: &Email,
    password_hash: &str,
) -> Result<(), AppError> {
    let result = on_pool!(db, |pool| {
        sqlx::query(
        "INSERT INTO credentials (user_id, site_id, email, password_hash) VALUES ($1, $2, $3, $4)"
    )
    .bind(user.as_uuid())
    .bind(site.as_uuid())
    .bind(email.as_str())
    .bind(password_hash)
    .execute(pool)
    .await
    .map(drop)
    });
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(AppError::Conflict(format!("{email} is already in use")))
        }
        other => other.map_err(AppError::from),
    }
}

/// Undoes [`insert_credentials`] when the user's creation could not be recorded.
pub(crate) async fn delete_credentials(db: &Database, user: UserId) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(
        "DELETE FROM credentials WHERE user_id = $1"
    )
    .bind(user.as_uuid())
    .execute(pool)
    .await
    .map(drop))?;
    Ok(())
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

pub(crate) async fn set_password_hash(
    db: &Database,
    user: UserId,
    hash: &str,
) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(
        "UPDATE credentials SET password_hash = $1 WHERE user_id = $2"
    )
    .bind(hash)
    .bind(user.as_uuid())
    .execute(pool)
    .await
    .map(drop))?;
    Ok(())
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
}

pub(crate) async fn insert_session(
    db: &Database,
    token_hash: &[u8; 32],
    user: UserId,
    site: SiteId,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, site_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(token_hash.as_slice())
    .bind(user.as_uuid())
    .bind(site.as_uuid())
    .bind(now)
    .bind(expires_at)
    .execute(pool)
    .await
    .map(drop))?;
    Ok(())
}

/// The session with this token hash, if it is neither ended nor expired at `now`.
pub(crate) async fn find_live_session(
    db: &Database,
    token_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<Option<SessionRow>, AppError> {
    let row: Option<SessionRow> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT token_hash, user_id, site_id, expires_at, ended_at, impersonation_id, \
         impersonated_user_id FROM sessions WHERE token_hash = $1"
    )
    .bind(token_hash.as_slice())
    .fetch_optional(pool)
    .await?);
    Ok(row.filter(|s| s.ended_at.is_none() && s.expires_at > now))
}

pub(crate) async fn end_session(
    db: &Database,
    token_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(
        "UPDATE sessions SET ended_at = $1, impersonation_id = NULL, impersonated_user_id = NULL \
         WHERE token_hash = $2 AND ended_at IS NULL"
    )
    .bind(now)
    .bind(token_hash.as_slice())
    .execute(pool)
    .await
    .map(drop))?;
    Ok(())
}

/// Ends every open session of `user` (deactivation signs them out everywhere).
pub(crate) async fn end_sessions_of(
    db: &Database,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    on_pool!(db, |pool| sqlx::query(
        "UPDATE sessions SET ended_at = $1, impersonation_id = NULL, impersonated_user_id = NULL \
         WHERE user_id = $2 AND ended_at IS NULL"
    )
    .bind(now)
    .bind(user.as_uuid())
    .execute(pool)
    .await
    .map(drop))?;
    Ok(())
}

/// Puts the session into (or takes it out of) an impersonation. Starting only
/// succeeds when the session is not already impersonating, so two concurrent starts
/// cannot both win.
pub(crate) async fn set_impersonation(
    db: &Database,
    token_hash: &[u8; 32],
    impersonation: Option<(ImpersonationId, UserId)>,
) -> Result<bool, AppError> {
    let affected = match impersonation {
        Some((id, subject)) => on_pool!(db, |pool| sqlx::query(
            "UPDATE sessions SET impersonation_id = $1, impersonated_user_id = $2 \
             WHERE token_hash = $3 AND impersonation_id IS NULL AND ended_at IS NULL"
        )
        .bind(id.as_uuid())
        .bind(subject.as_uuid())
        .bind(token_hash.as_slice())
        .execute(pool)
        .await?
        .rows_affected()),
        None => on_pool!(db, |pool| sqlx::query(
            "UPDATE sessions SET impersonation_id = NULL, impersonated_user_id = NULL \
             WHERE token_hash = $1"
        )
        .bind(token_hash.as_slice())
        .execute(pool)
        .await?
        .rows_affected()),
    };
    Ok(affected == 1)
}

/// Open sessions in which `user` impersonates or is impersonated.
pub(crate) async fn impersonations_involving(
    db: &Database,
    user: UserId,
) -> Result<Vec<SessionRow>, AppError> {
    let rows: Vec<SessionRow> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT token_hash, user_id, site_id, expires_at, ended_at, impersonation_id, \
         impersonated_user_id FROM sessions \
         WHERE (user_id = $1 OR impersonated_user_id = $1) \
         AND impersonation_id IS NOT NULL AND ended_at IS NULL"
    )
    .bind(user.as_uuid())
    .fetch_all(pool)
    .await?);
    Ok(rows)
}
