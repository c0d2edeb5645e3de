//! What owners, admins and auditors read of the audit trail (never while logged
//! in as someone): sessions with their people, changes, exports and their signed
//! manifests, the hash chain's verification and the signed digests. An agent
//! reads the sessions about their own account ("who logged in as me").

use std::collections::hash_map::{Entry, HashMap};

use chrono::{DateTime, Utc};
use crm_events::digest::{DigestReport, PublicKey, SignedDigest};
use crm_events::hash::ChainHead;
use crm_events::ids::{ImpersonationId, UserId};
use crm_events::VerifyReport;
use crm_projections::audit_trail::{
    self, Change, ChangeFilter, ImpersonationSession, SessionFilter,
};
use crm_projections::query::Order;
use crm_projections::users::{self, UserRow};
use crm_projections::Page;
use futures_util::{Stream, StreamExt};

use super::streams::while_allowed;
use super::{App, AppError, RequestContext};
use crate::domain::policy::{authorize, Action, Refusal};
use crate::export::{self, Format, Manifest, ManifestBody};

/// A session with the admin who logged in and the user acted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub session: ImpersonationSession,
    pub admin: UserRow,
    pub subject: UserRow,
}

/// A session with every change made in it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDetail {
    pub session: SessionView,
    pub changes: Vec<Change>,
    /// What it changed was reverted (`POST …/revert`).
    pub reverted: bool,
}

/// An export under way: the position it runs up to and its bytes, page by page.
#[derive(Debug)]
pub struct AuditExport<S> {
    pub up_to: i64,
    pub format: Format,
    pub bytes: S,
}

/// The site's hash chain as just verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub report: VerifyReport,
    pub checked_at: DateTime<Utc>,
    /// The site's recorded chain head, if it has events.
    pub head: Option<ChainHead>,
    /// The log checked against the site's signed digests, when the server signs.
    pub digests: Option<DigestReport>,
}

impl App {
    /// The site's impersonation sessions (owners, admins, auditors).
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`]; a bad cursor.
    pub async fn audit_sessions(
        &self,
        ctx: &RequestContext,
        filter: &SessionFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SessionView>, AppError> {
        self.settle_for(&[crm_projections::audit_trail::NAME])
            .await?;
        authorize(&ctx.caller, Action::ReadAudit)?;
        let page =
            audit_trail::sessions(self.store.database(), ctx.site(), filter, cursor, limit).await?;
        self.with_people(ctx, page).await
    }

    /// "Who logged in as me": the sessions in which someone acted as the caller.
    ///
    /// # Errors
    /// [`AppError::ImpersonationForbidden`] while impersonating; a bad cursor.
    pub async fn impersonations_of_me(
        &self,
        ctx: &RequestContext,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<SessionView>, AppError> {
        self.settle_for(&[crm_projections::audit_trail::NAME])
            .await?;
        authorize(&ctx.caller, Action::ReadOwnImpersonations)?;
        let filter = SessionFilter {
            subject_id: Some(ctx.actor()),
            ..SessionFilter::default()
        };
        let page = audit_trail::sessions(self.store.database(), ctx.site(), &filter, cursor, limit)
            .await?;
        self.with_people(ctx, page).await
    }

    /// One session with its changes: for owners, admins and auditors, and for the
    /// agent it was about (transparency: what changed on my account).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for another site's session or one the caller may not
    /// read.
    pub async fn audit_session(
        &self,
        ctx: &RequestContext,
        id: ImpersonationId,
    ) -> Result<SessionDetail, AppError> {
        self.settle_for(&[crm_projections::audit_trail::NAME])
            .await?;
        if ctx.caller.is_impersonating() {
            // Refused whatever the session, before looking for it.
            authorize(&ctx.caller, Action::ReadAudit)?;
        }
        let db = self.store.database();
        let session = audit_trail::session(db, ctx.site(), id)
            .await?
            .ok_or(AppError::NotFound("impersonation"))?;
        let about_me = session.subject_id == ctx.actor().as_uuid();
        match authorize(&ctx.caller, Action::ReadAudit) {
            Ok(()) => {}
            Err(_) if about_me && authorize(&ctx.caller, Action::ReadOwnImpersonations).is_ok() => {
            }
            Err(refusal @ Refusal::ImpersonationForbidden(_)) => return Err(refusal.into()),
            Err(_) => return Err(AppError::NotFound("impersonation")),
        }
        let changes = audit_trail::session_changes(db, id).await?;
        let page = Page {
            items: vec![session],
            next_cursor: None,
        };
        let session = self.with_people(ctx, page).await?.items.remove(0);
        // The session's own stream says it, whatever the projections have folded.
        let reverted = super::aggregates::load_impersonation(&self.store, id)
            .await?
            .state
            .reverted;
        Ok(SessionDetail {
            session,
            changes,
            reverted,
        })
    }

    /// The site's changes, filtered (owners, admins, auditors).
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`]; a bad cursor.
    pub async fn audit_changes(
        &self,
        ctx: &RequestContext,
        filter: &ChangeFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<Change>, AppError> {
        self.settle_for(&[crm_projections::audit_trail::NAME])
            .await?;
        authorize(&ctx.caller, Action::ReadAudit)?;
        Ok(audit_trail::changes(self.store.database(), ctx.site(), filter, cursor, limit).await?)
    }

    /// The site's changes of `filter` as a file, page by page (flat memory however
    /// large), up to `filter.up_to` (the head when not given), for as long as the
    /// session may read the audit trail. The same filter and `up_to` always give
    /// the same bytes.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`];
    /// [`AppError::Validation`] for an `up_to` past the head.
    pub async fn audit_export(
        &self,
        ctx: &RequestContext,
        mut filter: ChangeFilter,
        format: Format,
    ) -> Result<
        AuditExport<impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static>,
        AppError,
    > {
        authorize(&ctx.caller, Action::ReadAudit)?;
        let up_to = self.export_up_to(&mut filter).await?;
        let pages =
            export::chunks(self.store.database().clone(), ctx.site(), filter, format).map(|page| {
                page.map_err(|error| {
                    tracing::error!(%error, "audit export stopped");
                    std::io::Error::other("the export could not be completed")
                })
            });
        Ok(AuditExport {
            up_to,
            format,
            bytes: while_allowed(self.clone(), ctx.clone(), Action::ReadAudit, pages),
        })
    }

    /// The signed manifest of the export of `filter` (rows and SHA-256), which
    /// `crm audit verify-export` checks offline.
    ///
    /// # Errors
    /// As [`App::audit_export`]; [`AppError::NotFound`] when the server signs
    /// nothing.
    pub async fn audit_export_manifest(
        &self,
        ctx: &RequestContext,
        mut filter: ChangeFilter,
        format: Format,
    ) -> Result<Manifest, AppError> {
        authorize(&ctx.caller, Action::ReadAudit)?;
        let key = self.public_key().ok_or(AppError::NotFound("signing key"))?;
        let up_to_position = self.export_up_to(&mut filter).await?;
        let (rows, sha256) = export::measure(
            self.store.database().clone(),
            ctx.site(),
            filter.clone(),
            format,
        )
        .await?;
        let body = ManifestBody {
            site_id: ctx.site(),
            filter: export::filter_params(&filter),
            format: format.name().to_owned(),
            up_to_position,
            rows,
            sha256,
            signed_at: self.clock.now(),
            key_id: key.id().to_owned(),
        };
        let (_, signature) = self
            .sign(&body.canonical())
            .ok_or(AppError::NotFound("signing key"))?;
        Ok(Manifest { body, signature })
    }

    /// Recomputes the site's hash chain and checks it against the site's signed
    /// digests, when the server signs.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`]; store failures.
    pub async fn verify_site(&self, ctx: &RequestContext) -> Result<Verification, AppError> {
        authorize(&ctx.caller, Action::ReadAudit)?;
        let report = self.store.verify(Some(ctx.site())).await?;
        // A break found here is the server's too (/healthz, X-Chain-Intact); an
        // intact site changes nothing of what the server's watch knows.
        self.note_chain(&report, 0).await;
        let head = self
            .store
            .chain_heads(Some(ctx.site()))
            .await?
            .into_iter()
            .next();
        let digests = self.check_digests(ctx.site()).await?;
        Ok(Verification {
            report,
            checked_at: Utc::now(),
            head,
            digests,
        })
    }

    /// The site's signed digests from `from_position` on, in `order`, after the
    /// digest numbered `after` (a cursor).
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`]; store failures.
    pub async fn audit_digests(
        &self,
        ctx: &RequestContext,
        from_position: i64,
        order: Order,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<SignedDigest>, AppError> {
        authorize(&ctx.caller, Action::ReadAudit)?;
        let mut items = self
            .store
            .digests_listed(
                ctx.site(),
                from_position,
                order == Order::NewestFirst,
                after,
                limit + 1,
            )
            .await?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = more
            .then(|| items.last().map(|d| d.body.seq.to_string()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    /// The public half of the key that signs digests and manifests.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`];
    /// [`AppError::NotFound`] when the server signs nothing.
    pub fn audit_public_key(&self, ctx: &RequestContext) -> Result<PublicKey, AppError> {
        authorize(&ctx.caller, Action::ReadAudit)?;
        self.public_key().ok_or(AppError::NotFound("signing key"))
    }

    /// An export's `up_to`: the head unless given, never past it, once the
    /// projections have folded that far.
    async fn export_up_to(&self, filter: &mut ChangeFilter) -> Result<i64, AppError> {
        let head = self.store.head().await?.0;
        let up_to = filter.up_to.unwrap_or(head);
        if up_to < 0 || up_to > head {
            return Err(AppError::invalid(
                "up_to",
                format!("a position from 0 to the head ({head})"),
            ));
        }
        self.settle_for(&[crm_projections::audit_trail::NAME])
            .await?;
        filter.up_to = Some(up_to);
        Ok(up_to)
    }

    /// A page of sessions, each with its admin and subject (projected before it).
    async fn with_people(
        &self,
        ctx: &RequestContext,
        page: Page<ImpersonationSession>,
    ) -> Result<Page<SessionView>, AppError> {
        let db = self.store.database();
        let mut known: HashMap<uuid::Uuid, UserRow> = HashMap::new();
        let mut items = Vec::with_capacity(page.items.len());
        for session in page.items {
            for id in [session.admin_id, session.subject_id] {
                if let Entry::Vacant(slot) = known.entry(id) {
                    let user = users::get(db, ctx.site(), UserId::from_uuid(id))
                        .await?
                        .ok_or(AppError::NotFound("user"))?;
                    slot.insert(user);
                }
            }
            items.push(SessionView {
                admin: known[&session.admin_id].clone(),
                subject: known[&session.subject_id].clone(),
                session,
            });
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }
}
