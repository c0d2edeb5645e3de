-- The read side: tables the projections fold the event log into.
--
-- Why: web frontends read these, never the log. Each projection owns its tables
-- and writes nothing else; its checkpoint (the last position folded in) commits in
-- the same transaction as its rows. These tables are disposable: `crm rebuild`
-- empties and refills them from the log. Every list query has an index that starts
-- with its filter and ends with its sort key and id (cursor pagination).

CREATE TABLE projection_checkpoints (
    name     TEXT    PRIMARY KEY,
    version  INTEGER NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;

-- users
CREATE TABLE sites_view (
    id                              BLOB    PRIMARY KEY,
    name                            TEXT    NOT NULL,
    impersonation_enabled           INTEGER NOT NULL,
    impersonation_max_minutes       INTEGER NOT NULL,
    impersonation_reason_required   INTEGER NOT NULL,
    notify_subject_on_impersonation INTEGER NOT NULL,
    version                         INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE users_view (
    id         BLOB    PRIMARY KEY,
    site_id    BLOB    NOT NULL,
    name       TEXT    NOT NULL,
    email      TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    active     INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    version    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX users_view_by_site ON users_view (site_id, name, id);

-- lead_manager (due_key: the next open task's due time, or far in the future when
-- there is none, so "soonest due first" sorts and pages without NULLs)
CREATE TABLE leads_view (
    id                BLOB    PRIMARY KEY,
    site_id           BLOB    NOT NULL,
    assigned_agent_id BLOB,
    name              TEXT    NOT NULL,
    name_key          TEXT    NOT NULL,
    email             TEXT,
    phone             TEXT,
    source            TEXT,
    stage             TEXT    NOT NULL,
    tags              TEXT    NOT NULL,
    archived          INTEGER NOT NULL,
    last_contacted_at TEXT,
    next_task_due_at  TEXT,
    due_key           TEXT    NOT NULL,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    version           INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX leads_by_agent_updated ON leads_view (assigned_agent_id, archived, updated_at, id);
CREATE INDEX leads_by_agent_name ON leads_view (assigned_agent_id, archived, name_key, id);
CREATE INDEX leads_by_agent_due ON leads_view (assigned_agent_id, archived, due_key, id);
CREATE INDEX leads_by_agent_stage ON leads_view (assigned_agent_id, archived, stage);
CREATE INDEX leads_by_site_updated ON leads_view (site_id, archived, updated_at, id);
CREATE INDEX leads_by_site_name ON leads_view (site_id, archived, name_key, id);
CREATE INDEX leads_by_site_due ON leads_view (site_id, archived, due_key, id);
CREATE INDEX leads_by_site_stage ON leads_view (site_id, archived, stage);

CREATE TABLE lead_tags (
    lead_id BLOB NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (lead_id, tag)
) WITHOUT ROWID;

CREATE INDEX lead_tags_by_tag ON lead_tags (tag, lead_id);

CREATE TABLE lead_notes (
    id         BLOB PRIMARY KEY,
    lead_id    BLOB NOT NULL,
    body       TEXT NOT NULL,
    author_id  BLOB NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX lead_notes_by_lead ON lead_notes (lead_id, created_at);

CREATE TABLE lead_tasks (
    id           BLOB PRIMARY KEY,
    lead_id      BLOB NOT NULL,
    title        TEXT NOT NULL,
    due_at       TEXT NOT NULL,
    completed_at TEXT,
    created_at   TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX lead_tasks_by_lead ON lead_tasks (lead_id, due_at);

CREATE TABLE lead_communications (
    id         BLOB PRIMARY KEY,
    lead_id    BLOB NOT NULL,
    channel    TEXT NOT NULL,
    direction  TEXT NOT NULL,
    summary    TEXT NOT NULL,
    author_id  BLOB NOT NULL,
    created_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX lead_communications_by_lead ON lead_communications (lead_id, created_at);

-- settings
CREATE TABLE settings_view (
    user_id  BLOB    PRIMARY KEY,
    site_id  BLOB    NOT NULL,
    settings TEXT    NOT NULL,
    version  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE templates_view (
    id         BLOB    PRIMARY KEY,
    user_id    BLOB    NOT NULL,
    site_id    BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    subject    TEXT,
    body       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX templates_by_user ON templates_view (user_id, name, id);

-- notifications
CREATE TABLE notifications (
    id         BLOB PRIMARY KEY,
    user_id    BLOB NOT NULL,
    site_id    BLOB NOT NULL,
    kind       TEXT NOT NULL,
    text       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    read_at    TEXT
) WITHOUT ROWID;

CREATE INDEX notifications_by_user ON notifications (user_id, position);

CREATE TABLE notification_people (
    user_id BLOB PRIMARY KEY,
    name    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE notification_sites (
    site_id        BLOB    PRIMARY KEY,
    notify_subject INTEGER NOT NULL
) WITHOUT ROWID;

-- audit_trail
CREATE TABLE audit_sessions (
    id           BLOB    PRIMARY KEY,
    site_id      BLOB    NOT NULL,
    admin_id     BLOB    NOT NULL,
    subject_id   BLOB    NOT NULL,
    reason       TEXT,
    started_at   TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    ended_at     TEXT,
    end_reason   TEXT,
    change_count INTEGER NOT NULL,
    position     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX audit_sessions_by_site ON audit_sessions (site_id, position);
CREATE INDEX audit_sessions_by_subject ON audit_sessions (subject_id, position);
CREATE INDEX audit_sessions_by_admin ON audit_sessions (admin_id, position);

CREATE TABLE audit_changes (
    position         INTEGER NOT NULL,
    seq              INTEGER NOT NULL,
    site_id          BLOB    NOT NULL,
    at               TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    entity_type      TEXT    NOT NULL,
    entity_id        BLOB    NOT NULL,
    field            TEXT    NOT NULL,
    before           TEXT    NOT NULL,
    after            TEXT    NOT NULL,
    actor_id         BLOB    NOT NULL,
    subject_id       BLOB    NOT NULL,
    impersonation_id BLOB,
    PRIMARY KEY (position, seq)
) WITHOUT ROWID;

CREATE INDEX audit_changes_by_site ON audit_changes (site_id, position, seq);
CREATE INDEX audit_changes_by_session ON audit_changes (impersonation_id, position, seq)
    WHERE impersonation_id IS NOT NULL;
CREATE INDEX audit_changes_impersonated ON audit_changes (site_id, position, seq)
    WHERE impersonation_id IS NOT NULL;
CREATE INDEX audit_changes_by_actor ON audit_changes (site_id, actor_id, position, seq);
CREATE INDEX audit_changes_by_subject ON audit_changes (site_id, subject_id, position, seq);
CREATE INDEX audit_changes_by_entity ON audit_changes (site_id, entity_type, entity_id, position, seq);
