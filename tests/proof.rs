//! Proof for outsiders, on both backends: signed digests catch what the hash chain
//! alone cannot (a cut tail with its head rewritten, a log rewritten with
//! recomputed hashes, an event moved between sites), and name every tamper of the
//! digests themselves (removed, altered, reordered, signed by another key, removed
//! from the database); two servers write each digest once; an export at a position
//! is the same bytes later and its signed manifest verifies, while an altered byte
//! does not; the private key appears in no answer, no log line and no table.
//!
//! The attacker here has full database access: the append-only triggers are
//! dropped first, as in `events/tests/tamper.rs`.

mod support;

use std::path::{Path, PathBuf};

use crm::app::App;
use crm_events::backend_tests;
use crm_events::digest::{self, DigestReport, PublicKey, SigningKey};
use crm_events::hash::event_hash;
use crm_events::ids::SiteId;
use crm_events::testing::TestDatabase;
use crm_events::{Database, EventStore, Position, RecordedEvent};
use serde_json::json;
use support::http::Api;
use support::{lead_of, Site};

backend_tests!(
    the_untouched_log_and_digests_verify,
    a_cut_tail_passes_the_chain_but_not_the_digests,
    a_recomputed_rewrite_passes_the_chain_but_not_the_digests,
    an_event_moved_between_sites_is_named_inserted_and_removed,
    reordered_events_with_recomputed_hashes_are_named,
    tampered_digests_are_named,
    two_servers_write_each_digest_once,
    a_digest_kept_without_its_file_gets_it_next_round,
    an_export_at_a_position_is_the_same_bytes_later_and_its_manifest_verifies,
    the_private_key_stays_out_of_answers_and_tables,
    the_digests_list_pages_in_either_order_from_a_position,
);

/// A fresh directory for this test's keys and digests.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("crm-proof-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An app signing digests into `dir/digests`, with a site whose log got two
/// digests (after 5 leads, then after 3 more), and the public key.
struct Signed {
    app: App,
    site: Site,
    dir: PathBuf,
    key: PublicKey,
    key_file: PathBuf,
}

impl Signed {
    fn digests(&self) -> PathBuf {
        self.dir.join("digests")
    }

    /// `crm verify --digests --public-key` on the database: its exit code and output.
    fn crm_verify(&self, db: &TestDatabase) -> (Option<i32>, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
            .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
            .args(["verify", "--database-url", &db.url, "--digests"])
            .arg(self.digests())
            .arg("--public-key")
            .arg(&self.key_file)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The site's log checked against the digest files, as `crm verify` does.
    async fn check(&self, site: SiteId, dir: &Path) -> DigestReport {
        let files = digest::read_dir(dir, Some(site)).unwrap();
        let stored = self.app.store().all_digests(site).await.unwrap();
        if let Some(problem) = digest::compare(&files, &stored) {
            return DigestReport::failed(&files, problem);
        }
        self.app
            .store()
            .verify_digests(site, files, &self.key)
            .await
            .unwrap()
    }
}

async fn signed(db: &TestDatabase) -> Signed {
    let dir = scratch();
    let key = SigningKey::generate().unwrap();
    let (private, public) = key.write_pair(&dir.join("keys")).unwrap();
    assert_ne!(private, public);
    let public_key = key.public();
    let app = support::app(db)
        .await
        .with_signer(key, Some(dir.join("digests")));
    let site = support::site(&app, "Proof Realty", "proof.example").await;
    for i in 0..5 {
        lead_of(&app, &site.agent1.ctx, &format!("First {i}")).await;
    }
    assert_eq!(app.write_digests().await.unwrap().len(), 1);
    assert!(
        app.write_digests().await.unwrap().is_empty(),
        "nothing moved: no digest"
    );
    for i in 0..3 {
        lead_of(&app, &site.agent2.ctx, &format!("Second {i}")).await;
    }
    let second = app.write_digests().await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].body.seq, 2);
    Signed {
        app,
        site,
        dir,
        key: public_key,
        key_file: public,
    }
}

async fn exec(db: &Database, sql: &str) {
    crm_events::on_pool!(db, |pool| sqlx::raw_sql(sql).execute(pool).await.map(drop)).unwrap();
}

async fn drop_guards(db: &Database) {
    let sql = match db.backend_name() {
        "sqlite" => {
            "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete; \
             DROP TRIGGER events_no_replace; DROP TRIGGER audit_digests_no_update; \
             DROP TRIGGER audit_digests_no_delete; DROP TRIGGER audit_digests_no_replace;"
        }
        _ => {
            "ALTER TABLE events DISABLE TRIGGER USER; \
             ALTER TABLE audit_digests DISABLE TRIGGER USER;"
        }
    };
    exec(db, sql).await;
}

/// Rewrites the stored events of `site` from `events` (in position order), each
/// event's hash recomputed on the previous one, and the site's recorded head: the
/// chain is whole again, as an attacker who knows the hashing would leave it.
async fn rewrite_chain(db: &Database, site: SiteId, events: &mut [RecordedEvent]) {
    let mut prev = crm_events::hash::GENESIS;
    for event in events.iter_mut() {
        event.site_id = site;
        event.prev_hash = prev;
        event.hash = event_hash(event, &prev);
        prev = event.hash;
        let query = "UPDATE events SET site_id = $1, payload = $2, prev_hash = $3, hash = $4 \
                     WHERE position = $5";
        crm_events::on_pool!(db, |pool| sqlx::query(query)
            .bind(site.as_uuid())
            .bind(&event.payload)
            .bind(event.prev_hash.to_vec())
            .bind(event.hash.to_vec())
            .bind(event.position.0)
            .execute(pool)
            .await
            .map(drop))
        .unwrap();
    }
    let (last, count) = events
        .last()
        .map_or((0, 0), |e| (e.position.0, events.len() as i64));
    let query = "UPDATE site_chains SET last_position = $1, last_hash = $2, event_count = $3 \
                 WHERE site_id = $4";
    crm_events::on_pool!(db, |pool| sqlx::query(query)
        .bind(last)
        .bind(prev.to_vec())
        .bind(count)
        .bind(site.as_uuid())
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
}

/// A site's events as stored (personal values sealed), as someone rewriting the
/// database finds them.
async fn site_events(store: &EventStore, site: SiteId) -> Vec<RecordedEvent> {
    store
        .read_site_stored(site, Position::START, 100_000)
        .await
        .unwrap()
}

#[track_caller]
fn named(report: &DigestReport, words: &str) {
    assert!(!report.ok, "{report:?}");
    let problem = report.problem.as_deref().unwrap();
    assert!(problem.contains(words), "{words:?} in {problem:?}");
}

async fn the_untouched_log_and_digests_verify(db: &TestDatabase) {
    let s = signed(db).await;
    let report = s.check(s.site.id, &s.digests()).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.digests, 2);
    let head = s.app.store().chain_heads(Some(s.site.id)).await.unwrap()[0];
    assert_eq!(report.latest_to_position, Some(head.last_position.0));
    // Each digest is one file, named by its seq, never rewritten.
    let folder = s.digests().join(s.site.id.to_string());
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    // The database keeps digests append-only.
    for sql in [
        "UPDATE audit_digests SET to_position = 1",
        "DELETE FROM audit_digests",
    ] {
        let refused = crm_events::on_pool!(s.app.store().database(), |pool| sqlx::raw_sql(sql)
            .execute(pool)
            .await
            .is_err());
        assert!(refused, "{sql} is refused");
    }
    assert_eq!(s.app.store().all_digests(s.site.id).await.unwrap().len(), 2);
}

async fn a_cut_tail_passes_the_chain_but_not_the_digests(db: &TestDatabase) {
    let s = signed(db).await;
    let store = s.app.store();
    let db = store.database();
    drop_guards(db).await;
    // The last five events go, and the heads are rewritten to the new end.
    let mut events = site_events(store, s.site.id).await;
    let kept = events.len() - 5;
    let cut_from = events[kept].position.0;
    exec(
        db,
        &format!("DELETE FROM events WHERE position >= {cut_from}"),
    )
    .await;
    exec(
        db,
        &format!("UPDATE event_log_head SET last_position = {}", cut_from - 1),
    )
    .await;
    events.truncate(kept);
    rewrite_chain(db, s.site.id, &mut events).await;
    let chain = store.verify(None).await.unwrap();
    assert!(chain.ok, "the chain alone is fooled: {chain:?}");
    named(&s.check(s.site.id, &s.digests()).await, "truncated");
}

async fn a_recomputed_rewrite_passes_the_chain_but_not_the_digests(db: &TestDatabase) {
    let s = signed(db).await;
    let store = s.app.store();
    let db = store.database();
    drop_guards(db).await;
    let mut events = site_events(store, s.site.id).await;
    // A lead's tags changed in its creation (its name is sealed), every later
    // hash recomputed.
    let opened = store
        .read_site(s.site.id, Position::START, 100_000)
        .await
        .unwrap();
    let at = opened
        .iter()
        .position(|e| e.payload.contains("First 2"))
        .unwrap();
    assert!(events[at].payload.contains(r#""tags":["buyer"]"#));
    events[at].payload = events[at].payload.replace("buyer", "seller");
    rewrite_chain(db, s.site.id, &mut events).await;
    let chain = store.verify(None).await.unwrap();
    assert!(chain.ok, "the chain alone is fooled: {chain:?}");
    named(&s.check(s.site.id, &s.digests()).await, "rewritten");
}

async fn an_event_moved_between_sites_is_named_inserted_and_removed(db: &TestDatabase) {
    let s = signed(db).await;
    let other = support::site(&s.app, "Other Realty", "other.example").await;
    lead_of(&s.app, &other.agent1.ctx, "Other lead").await;
    assert_eq!(s.app.write_digests().await.unwrap().len(), 1);
    for i in 0..2 {
        lead_of(&s.app, &s.site.agent1.ctx, &format!("Third {i}")).await;
    }
    assert_eq!(s.app.write_digests().await.unwrap().len(), 1);
    let store = s.app.store();
    let db = store.database();
    drop_guards(db).await;
    // One of the other site's events becomes Proof Realty's; both chains are
    // recomputed and whole again.
    let mut theirs = site_events(store, other.id).await;
    let moved = theirs.remove(theirs.len() / 2);
    let mut ours = site_events(store, s.site.id).await;
    ours.push(moved);
    ours.sort_by_key(|e| e.position);
    rewrite_chain(db, s.site.id, &mut ours).await;
    rewrite_chain(db, other.id, &mut theirs).await;
    let chain = store.verify(None).await.unwrap();
    assert!(chain.ok, "the chain alone is fooled: {chain:?}");
    named(&s.check(s.site.id, &s.digests()).await, "inserted");
    named(&s.check(other.id, &s.digests()).await, "removed");
}

async fn reordered_events_with_recomputed_hashes_are_named(db: &TestDatabase) {
    let s = signed(db).await;
    let store = s.app.store();
    let db = store.database();
    drop_guards(db).await;
    // Two of the site's events trade places (what each says, at the other's
    // position), every hash recomputed.
    let mut events = site_events(store, s.site.id).await;
    let opened = store
        .read_site(s.site.id, Position::START, 100_000)
        .await
        .unwrap();
    let (a, b) = (
        opened
            .iter()
            .position(|e| e.payload.contains("First 1"))
            .unwrap(),
        opened
            .iter()
            .position(|e| e.payload.contains("First 3"))
            .unwrap(),
    );
    let (first, second) = (events[a].clone(), events[b].clone());
    for (at, from) in [(a, &second), (b, &first)] {
        events[at].payload = from.payload.clone();
    }
    rewrite_chain(db, s.site.id, &mut events).await;
    let chain = store.verify(None).await.unwrap();
    assert!(chain.ok, "the chain alone is fooled: {chain:?}");
    named(&s.check(s.site.id, &s.digests()).await, "rewritten");
}

/// A copy of the digest directory to tamper with.
fn copy_dir(from: &Path) -> PathBuf {
    let to = scratch();
    for site in std::fs::read_dir(from).unwrap() {
        let site = site.unwrap().path();
        let target = to.join(site.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(&site).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
    }
    to
}

fn files_of(dir: &Path, site: SiteId) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(site.to_string()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

async fn tampered_digests_are_named(db: &TestDatabase) {
    let s = signed(db).await;
    let site = s.site.id;

    // A removed file.
    let dir = copy_dir(&s.digests());
    std::fs::remove_file(&files_of(&dir, site)[0]).unwrap();
    named(&s.check(site, &dir).await, "digest 1");

    // An altered file: the count it states, changed.
    let dir = copy_dir(&s.digests());
    let first = &files_of(&dir, site)[0];
    let text = std::fs::read_to_string(first).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["event_count"] = json!(value["event_count"].as_i64().unwrap() + 1);
    std::fs::write(first, value.to_string()).unwrap();
    named(&s.check(site, &dir).await, "altered");

    // Reordered: the two files' contents swapped.
    let dir = copy_dir(&s.digests());
    let files = files_of(&dir, site);
    let (a, b) = (
        std::fs::read(&files[0]).unwrap(),
        std::fs::read(&files[1]).unwrap(),
    );
    std::fs::write(&files[0], b).unwrap();
    std::fs::write(&files[1], a).unwrap();
    named(&s.check(site, &dir).await, "out of order");

    // Signed by another key: the same statements re-signed by a stranger.
    let stranger = SigningKey::generate().unwrap();
    let dir = scratch();
    for original in s.app.store().all_digests(site).await.unwrap() {
        let mut body = original.body.clone();
        body.key_id = stranger.id().to_owned();
        digest::SignedDigest::sign(body, &stranger)
            .write_file(&dir)
            .unwrap();
    }
    let files = digest::read_dir(&dir, Some(site)).unwrap();
    let report = s
        .app
        .store()
        .verify_digests(site, files, &s.key)
        .await
        .unwrap();
    named(&report, "another key");

    // Removed from the database (the files keep it).
    drop_guards(s.app.store().database()).await;
    exec(
        s.app.store().database(),
        "DELETE FROM audit_digests WHERE seq = 2",
    )
    .await;
    named(&s.check(site, &s.digests()).await, "not in the database");

    // And the binary says the same, exit 1, naming it.
    let (code, text) = s.crm_verify(db);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("TAMPERED") && text.contains("not in the database"),
        "{text}"
    );
}

/// The digest was kept in the database but its file never written (the disk was
/// full, the process died between the two): the next round writes it, the same
/// bytes, and signs nothing new.
async fn a_digest_kept_without_its_file_gets_it_next_round(db: &TestDatabase) {
    let s = signed(db).await;
    let files = files_of(&s.digests(), s.site.id);
    let last = files.last().unwrap().clone();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::remove_file(&last).unwrap();
    assert!(
        s.app.write_digests().await.unwrap().is_empty(),
        "nothing new"
    );
    assert_eq!(std::fs::read(&last).unwrap(), bytes, "the same file again");
    assert!(s.check(s.site.id, &s.digests()).await.ok);
}

async fn two_servers_write_each_digest_once(db: &TestDatabase) {
    let s = signed(db).await;
    lead_of(&s.app, &s.site.agent1.ctx, "One more").await;
    // A second server on the same database, key and directory.
    let key = SigningKey::read(&s.dir.join("keys/signing-key.pem")).unwrap();
    let other = support::app(db).await.with_signer(key, Some(s.digests()));
    let (a, b) = tokio::join!(s.app.write_digests(), other.write_digests());
    let made = a.unwrap().len() + b.unwrap().len();
    assert_eq!(made, 1, "exactly one server's digest is kept");
    let stored = s.app.store().all_digests(s.site.id).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(files_of(&s.digests(), s.site.id).len(), 3);
    assert!(s.check(s.site.id, &s.digests()).await.ok);

    // The binary agrees: exit 0 and a summary.
    let (code, text) = s.crm_verify(db);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("3 digests signed by key"), "{text}");
}

async fn an_export_at_a_position_is_the_same_bytes_later_and_its_manifest_verifies(
    db: &TestDatabase,
) {
    let s = signed(db).await;
    let api = Api::new(s.app.clone());
    let admin = api.login("admin@proof.example").await;
    let lead = api
        .post(&admin, "/api/leads", json!({"name": "Dana Novak"}))
        .await;
    let lead_id = lead.id();
    for format in ["csv", "ndjson"] {
        let first = api
            .get(&admin, &format!("/api/audit/export?format={format}"))
            .await;
        assert_eq!(first.status, 200);
        let up_to: i64 = first.header("x-up-to-position").unwrap().parse().unwrap();
        let manifest = api
            .get(
                &admin,
                &format!("/api/audit/export/manifest?format={format}&up_to={up_to}"),
            )
            .await;
        assert_eq!(manifest.status, 200, "{}", manifest.body);
        // More history, the lead renamed: the same export is the same bytes.
        let renamed = api
            .patch(
                &admin,
                &format!("/api/leads/{lead_id}"),
                json!({"name": format!("Dana Novak-{format}")}),
                None,
            )
            .await;
        assert_eq!(renamed.status, 200, "{}", renamed.body);
        let again = api
            .get(
                &admin,
                &format!("/api/audit/export?format={format}&up_to={up_to}"),
            )
            .await;
        assert_eq!(again.raw, first.raw, "{format}: the same bytes");
        let text = String::from_utf8_lossy(&again.raw);
        assert!(
            text.contains("Dana Novak") && !text.contains(&format!("Dana Novak-{format}")),
            "named as it was then"
        );

        let manifest: crm::export::Manifest =
            serde_json::from_value(manifest.body.clone()).unwrap();
        assert_eq!(manifest.body.up_to_position, up_to);
        let summary = crm::export::verify_export(&again.raw, &manifest, &s.key).unwrap();
        assert!(summary.starts_with("ok:"), "{summary}");
        // One byte changed: refused, saying so.
        let mut altered = again.raw.clone();
        let last = altered.len() - 2;
        altered[last] ^= 0x01;
        let problem = crm::export::verify_export(&altered, &manifest, &s.key).unwrap_err();
        assert!(problem.contains("altered"), "{problem}");
        // A manifest changed after signing: refused.
        let mut forged = manifest.clone();
        forged.body.rows += 1;
        assert!(crm::export::verify_export(&again.raw, &forged, &s.key)
            .unwrap_err()
            .contains("signature"));
    }
    // Past the head, or before the start: refused. Up to 0: the header alone.
    let head = support::head(&s.app).await.0;
    for past in [head + 10, -1] {
        api.get(&admin, &format!("/api/audit/export?up_to={past}"))
            .await
            .problem(422, "validation");
    }
    let nothing = api.get(&admin, "/api/audit/export?up_to=0").await;
    assert_eq!(nothing.status, 200);
    assert_eq!(nothing.header("x-up-to-position"), Some("0"));
    assert_eq!(
        String::from_utf8_lossy(&nothing.raw).lines().count(),
        1,
        "the header row alone"
    );

    // The command line: the same export and manifest, checked offline.
    let dir = scratch();
    let out_file = dir.join("export.csv");
    let manifest_file = dir.join("export.manifest.json");
    let site = s.site.id.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
        .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
        .args([
            "audit",
            "export",
            "--database-url",
            &db.url,
            "--site",
            &site,
        ])
        .args(["--up-to", &head.to_string(), "--manifest"])
        .arg(&manifest_file)
        .arg("--signing-key")
        .arg(s.dir.join("keys/signing-key.pem"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&out_file, &out.stdout).unwrap();
    let verify = |file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
            .env("CRM_MASTER_KEY_FILE", &db.master_key_file)
            .args(["audit", "verify-export"])
            .arg(file)
            .arg("--manifest")
            .arg(&manifest_file)
            .arg("--public-key")
            .arg(&s.key_file)
            .output()
            .unwrap()
    };
    let ok = verify(&out_file);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let mut bytes = std::fs::read(&out_file).unwrap();
    bytes[10] ^= 0x01;
    std::fs::write(&out_file, bytes).unwrap();
    let bad = verify(&out_file);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("TAMPERED"));
}

async fn the_private_key_stays_out_of_answers_and_tables(db: &TestDatabase) {
    let s = signed(db).await;
    let pem = std::fs::read_to_string(s.dir.join("keys/signing-key.pem")).unwrap();
    let secret: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(secret.len() > 40);
    // The file is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.dir.join("keys/signing-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
    let key = SigningKey::read(&s.dir.join("keys/signing-key.pem")).unwrap();
    assert!(!format!("{key:?}").contains(&secret[..20]));

    let api = Api::new(s.app.clone());
    let auditor = api.login("auditor@proof.example").await;
    let public = api.get(&auditor, "/api/audit/public-key").await;
    assert_eq!(public.status, 200);
    assert_eq!(public.body["key_id"], s.key.id());
    assert_eq!(public.body["public_key"], s.key.base64());
    let mut answers = String::from_utf8_lossy(&public.raw).into_owned();
    for path in [
        "/api/audit/digests",
        "/api/audit/verify",
        "/api/audit/export/manifest",
        "/api/audit/export?format=ndjson",
    ] {
        let reply = api.get(&auditor, path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        answers.push_str(&String::from_utf8_lossy(&reply.raw));
    }
    assert!(answers.contains(s.key.id()));
    assert!(
        !answers.contains(&secret),
        "no answer holds the private key"
    );

    // No table holds it, as text or as the raw seed: every row of every table
    // on PostgreSQL, the database file itself on SQLite.
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&secret)
        .unwrap();
    let seed = &der[der.len() - 32..];
    match s.app.store().database() {
        Database::Sqlite(pool) => {
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await
                .unwrap();
            let path = db
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap();
            let mut bytes = std::fs::read(path).unwrap();
            bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
            let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(holds(b"audit_digests"), "the file was read");
            assert!(!holds(secret.as_bytes()) && !holds(seed));
        }
        Database::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "audit_digests"));
            let seed_hex = seed.iter().map(|b| format!("{b:02x}")).collect::<String>();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" AS t"))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                for row in rows {
                    assert!(
                        !row.contains(&secret) && !row.contains(&seed_hex),
                        "{table} holds the private key"
                    );
                }
            }
        }
    }
}

/// Four digests, listed a page of one at a time newest first (the default) and
/// in pages of three oldest first: each exactly once, in order, the last page
/// with no cursor; `from_position` keeps those reaching it.
async fn the_digests_list_pages_in_either_order_from_a_position(db: &TestDatabase) {
    let s = signed(db).await;
    for round in 0..2 {
        lead_of(&s.app, &s.site.agent1.ctx, &format!("Third {round}")).await;
        assert_eq!(s.app.write_digests().await.unwrap().len(), 1);
    }
    let api = Api::new(s.app.clone());
    let auditor = api.login("auditor@proof.example").await;
    let pages = |query: String| {
        let api = api.clone();
        let auditor = auditor.clone();
        async move {
            let mut seen: Vec<Vec<(i64, i64)>> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    None => format!("/api/audit/digests?{query}"),
                    Some(c) => format!("/api/audit/digests?{query}&cursor={c}"),
                };
                let page = api.get(&auditor, &path).await;
                assert_eq!(page.status, 200, "{}", page.body);
                seen.push(
                    page.body["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| {
                            (
                                d["seq"].as_i64().unwrap(),
                                d["to_position"].as_i64().unwrap(),
                            )
                        })
                        .collect(),
                );
                match page.body["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => return seen,
                }
            }
        }
    };
    let newest_first = pages("limit=1".into()).await;
    let seqs: Vec<Vec<i64>> = newest_first
        .iter()
        .map(|p| p.iter().map(|d| d.0).collect())
        .collect();
    assert_eq!(seqs, [vec![4], vec![3], vec![2], vec![1]]);
    let oldest_first = pages("limit=3&order=asc".into()).await;
    let seqs: Vec<Vec<i64>> = oldest_first
        .iter()
        .map(|p| p.iter().map(|d| d.0).collect())
        .collect();
    assert_eq!(seqs, [vec![1, 2, 3], vec![4]]);
    let third_reaches = oldest_first[0][2].1;
    let second_reaches = oldest_first[0][1].1;
    assert!(second_reaches < third_reaches);
    let from: Vec<i64> = pages(format!("order=asc&from_position={}", second_reaches + 1))
        .await
        .concat()
        .iter()
        .map(|d| d.0)
        .collect();
    assert_eq!(from, [3, 4]);
}
